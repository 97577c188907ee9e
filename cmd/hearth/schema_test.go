package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"hearth/node"
	"hearth/node/storage"
	"hearth/p2p/identity"
)

// schemaObjects lists a database's tables and indexes with their SQL.
func schemaObjects(t *testing.T, db *storage.DB) map[string]string {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT name, COALESCE(sql, '') FROM sqlite_master`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, q string
		if err := rows.Scan(&name, &q); err != nil {
			t.Fatal(err)
		}
		out[name] = q
	}
	return out
}

// The template a browser node starts from is a database node.New finds
// complete: starting a node on it creates nothing, and the node works.
func TestSchemaTemplateIsWhatANodeNeeds(t *testing.T) {
	rt, _ := testRoutes(t, false)
	srv := httptest.NewServer(rt.handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/_hearth/v1/schema.db", nil)
	req.Header.Set("Accept-Encoding", "gzip") // set by hand: Go's client then leaves the body encoded
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("ETag") == "" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte("SQLite format 3\x00")) {
		t.Fatalf("not an SQLite database: %q", raw[:16])
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "hearth.db")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(storage.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	before := schemaObjects(t, db)
	db.Close()

	id, err := identity.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Config{
		ServerName: id.ServerName, KeyID: identity.KeyID, PrivateKey: id.Private,
		KeyOf: identity.PublicKeyOf, DB: storage.Options{Path: path}, OpenRegistration: true,
		// A transport, so that node.New runs the federation migrations
		// too, as a browser node does.
		Transport: http.DefaultTransport,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	after := schemaObjects(t, n.DB)
	if len(after) != len(before) {
		t.Errorf("node.New created objects the template lacks: %d before, %d after", len(before), len(after))
	}
	for name, q := range after {
		if before[name] != q {
			t.Errorf("%s differs from the template's:\n%s\n%s", name, before[name], q)
		}
	}
	rec := httptest.NewRecorder()
	reg := httptest.NewRequest("POST", "/_matrix/client/v3/register",
		bytes.NewReader([]byte(`{"username":"first","password":"a-long-password","auth":{"type":"m.login.dummy"}}`)))
	reg.RemoteAddr = "127.0.0.1:1"
	n.Handler().ServeHTTP(rec, reg)
	if rec.Code != 200 {
		t.Fatalf("register on the template: %d %s", rec.Code, rec.Body)
	}

	// Revalidation: the same ETag, no body.
	again, _ := http.NewRequest("GET", srv.URL+"/_hearth/v1/schema.db", nil)
	again.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	resp2, err := http.DefaultClient.Do(again)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation: %d", resp2.StatusCode)
	}
}
