package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"hearth/node"
	"hearth/node/storage"
	"hearth/p2p/identity"
	"hearth/web"
)

// testRoutes serves a real node on a temp dir, as run() wires it.
func testRoutes(t *testing.T, public bool) (routes, *identity.Identity) {
	t.Helper()
	dir := t.TempDir()
	id, err := identity.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Config{
		ServerName: id.ServerName, KeyID: identity.KeyID, PrivateKey: id.Private,
		DB:               storage.Options{Path: filepath.Join(dir, "hearth.db")},
		OpenRegistration: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return routes{
		Matrix:       n.Handler(),
		Status:       func() Status { return Status{ServerName: id.ServerName, PeerID: id.PeerID.String()} },
		Web:          web.FS(),
		PublicStatus: public,
	}, id
}

func TestStatusOnLoopback(t *testing.T) {
	rt, id := testRoutes(t, false)
	srv := httptest.NewServer(rt.handler()) // listens on 127.0.0.1
	defer srv.Close()

	res, err := http.Get(srv.URL + "/_hearth/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("status: %d", res.StatusCode)
	}
	// Decode into a generic map: the contract is the JSON, not our struct.
	var got map[string]any
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got["server_name"] != id.ServerName || got["peer_id"] != id.PeerID.String() {
		t.Errorf("status names %v / %v, want %s / %s", got["server_name"], got["peer_id"], id.ServerName, id.PeerID)
	}
	for _, k := range []string{"addrs", "peers"} {
		if _, ok := got[k].([]any); !ok {
			t.Errorf("%s is %#v, want a JSON array", k, got[k])
		}
	}
	// The server name decodes back to the peer ID it was made from.
	if pid, err := identity.PeerIDOf(got["server_name"].(string)); err != nil || pid.String() != got["peer_id"] {
		t.Errorf("server name does not decode to the peer ID: %v %v", pid, err)
	}
}

func TestStatusRefusesRemoteClients(t *testing.T) {
	for _, tc := range []struct {
		public bool
		remote string
		want   int
	}{
		{false, "192.0.2.7:5000", 403},
		{false, "[2001:db8::1]:5000", 403},
		{false, "[::1]:5000", 200},
		{false, "127.0.0.2:5000", 200},
		{true, "192.0.2.7:5000", 200},
	} {
		rt, _ := testRoutes(t, tc.public)
		req := httptest.NewRequest("GET", "/_hearth/v1/status", nil)
		req.RemoteAddr = tc.remote
		rec := httptest.NewRecorder()
		rt.handler().ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("public=%v from %s: %d, want %d", tc.public, tc.remote, rec.Code, tc.want)
			continue
		}
		if tc.want == 403 {
			var e struct{ Errcode string }
			json.Unmarshal(rec.Body.Bytes(), &e)
			if e.Errcode != "M_FORBIDDEN" {
				t.Errorf("from %s: errcode %q, want M_FORBIDDEN", tc.remote, e.Errcode)
			}
		}
	}
}

func TestCORSPreflightAndHeaders(t *testing.T) {
	rt, _ := testRoutes(t, false)
	srv := httptest.NewServer(rt.handler())
	defer srv.Close()

	req, _ := http.NewRequest("OPTIONS", srv.URL+"/_matrix/client/v3/rooms/!x/send/m.room.message/1", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "PUT")
	req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		t.Errorf("preflight: %d", res.StatusCode)
	}
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Allow-Origin %q", got)
	}
	if got := res.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, "PUT") {
		t.Errorf("Allow-Methods %q lacks PUT", got)
	}
	if got := strings.ToLower(res.Header.Get("Access-Control-Allow-Headers")); !strings.Contains(got, "authorization") || !strings.Contains(got, "content-type") {
		t.Errorf("Allow-Headers %q", got)
	}

	// Ordinary answers under /_matrix carry the header too, whatever the
	// endpoint answers.
	res, err = http.Get(srv.URL + "/_matrix/client/versions")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("GET /versions: Allow-Origin %q", got)
	}
}

func TestWebAppAndUnknownHearthPaths(t *testing.T) {
	rt, _ := testRoutes(t, false)
	srv := httptest.NewServer(rt.handler())
	defer srv.Close()

	// The app lives at /app (the service worker's scope); / sends there.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noFollow.Get(srv.URL + "/?x=1")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/app?x=1" {
		t.Errorf("GET /: %d to %q, want 302 to /app?x=1", res.StatusCode, res.Header.Get("Location"))
	}
	res, err = http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Request.URL.Path != "/app" || !strings.Contains(res.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "Hearth") {
		t.Errorf("GET / (followed): %d at %s %s %.80q", res.StatusCode, res.Request.URL.Path, res.Header.Get("Content-Type"), body)
	}

	res, err = http.Get(srv.URL + "/_hearth/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Errcode string }
	json.NewDecoder(res.Body).Decode(&e)
	res.Body.Close()
	if res.StatusCode != 404 || e.Errcode != "M_UNRECOGNIZED" {
		t.Errorf("GET /_hearth/v1/nope: %d %q", res.StatusCode, e.Errcode)
	}

	// The status endpoint is GET only.
	res, err = http.Post(srv.URL+"/_hearth/v1/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 405 && res.StatusCode != 404 {
		t.Errorf("POST status: %d", res.StatusCode)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Data != "./data" || o.HTTP != "127.0.0.1:8008" || o.NoRegistration || o.NoMDNS || o.PublicStatus {
		t.Errorf("defaults: %+v", o)
	}
	o, err = parseFlags([]string{
		"--data", "/tmp/x", "--http", "127.0.0.1:0",
		"--p2p", "/ip4/0.0.0.0/tcp/4001", "--p2p", "/ip4/0.0.0.0/udp/4001/quic-v1",
		"--bootstrap", "/ip4/127.0.0.1/tcp/4002",
		"--no-mdns", "--no-registration", "--log-level", "debug",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.P2P) != 2 || len(o.Bootstrap) != 1 || !o.NoMDNS || !o.NoRegistration || o.LogLevel.String() != "DEBUG" {
		t.Errorf("parsed: %+v", o)
	}
	for _, bad := range [][]string{
		{"--p2p", "not-a-multiaddr"},
		{"--bootstrap", "/ip4/1.2.3.4/tcp"},
		{"--log-level", "loud"},
		{"--data", ""},
		{"stray"},
		{"--unknown"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}
