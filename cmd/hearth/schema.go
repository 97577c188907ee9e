package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"hearth/node/httputil"
	"hearth/node/storage"
)

// schemaTemplate is an empty node database: every migration applied, no
// rows but those the migrations seed. A browser node copies it into its
// storage on its first start instead of running the migrations: under js/wasm
// their DDL is most of a first start's work (SQLite parses and plans each
// statement slowly there), and this is the same SQLite and the same
// migrations, built once natively. The browser node still runs its
// migrations, which find everything applied; a migration added later than
// the template runs there as usual.
type schemaTemplate struct {
	once sync.Once
	db   []byte
	gz   []byte // db gzipped: mostly empty pages, it shrinks ~20 times
	etag string
	err  error
}

// schema is the template this process serves.
var schema schemaTemplate

// bytes builds the template once, on first use (~0.1 s natively).
func (s *schemaTemplate) bytes() ([]byte, string, error) {
	s.once.Do(func() {
		s.db, s.err = buildSchema()
		if s.err != nil {
			s.err = fmt.Errorf("building the schema template: %w", s.err)
			return
		}
		sum := sha256.Sum256(s.db)
		s.etag = `"` + hex.EncodeToString(sum[:12]) + `"`
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression) // a valid level
		zw.Write(s.db)
		zw.Close()
		s.gz = gz.Bytes()
	})
	return s.db, s.etag, s.err
}

// buildSchema migrates a new database in a temporary directory and returns
// its file. Only the migrations' own SQL runs on it (constant statements,
// with the rows some of them seed, such as the known event types): it
// carries nothing of any node.
func buildSchema() ([]byte, error) {
	dir, err := os.MkdirTemp("", "hearth-schema-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "hearth.db")
	db, err := storage.Open(storage.Options{Path: path, Readers: 1})
	if err != nil {
		return nil, err
	}
	err = migrateAll(db)
	// Closing the last connection checkpoints the WAL into the file and
	// removes it.
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(path + "-wal"); err == nil && st.Size() > 0 {
		return nil, errors.New("the WAL was not checkpointed")
	}
	return os.ReadFile(path)
}

// migrateAll runs every component's migrations, as node.New does.
func migrateAll(db *storage.DB) error {
	for _, m := range []func() error{db.MigrateUserData, db.MigrateAccounts, db.MigrateRooms, db.MigrateFederation} {
		if err := m(); err != nil {
			return err
		}
	}
	st, err := db.SyncStore() // runs the sync migrations
	if err != nil {
		return err
	}
	st.Close()
	return nil
}

// serve answers GET /_hearth/v1/schema.db.
func (s *schemaTemplate) serve(w http.ResponseWriter, r *http.Request) {
	b, tag, err := s.bytes()
	if err != nil {
		slog.Error("schema template", "err", err)
		httputil.WriteError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/vnd.sqlite3")
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", tag)
	h.Add("Vary", "Accept-Encoding")
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		h.Set("Content-Encoding", "gzip")
		h.Set("Content-Length", strconv.Itoa(len(s.gz)))
		r.Header.Del("Range")
		b = s.gz
	}
	http.ServeContent(w, r, "schema.db", time.Time{}, bytes.NewReader(b))
}
