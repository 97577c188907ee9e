package storage

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWriterCheckpointsWhenIdle: commits never checkpoint by themselves;
// once writes stop, the node copies the WAL into the database file, and
// everything written reads back.
func TestWriterCheckpointsWhenIdle(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "h.db")
	db, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`CREATE TABLE blobs (n INTEGER PRIMARY KEY, b BLOB)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	before := size()
	blob := bytes.Repeat([]byte{7}, 4096) // a page or more each
	n := checkpointIdle + 50
	for i := range n {
		if err := db.Write(ctx, func(tx *Tx) error {
			_, err := tx.Exec(`INSERT INTO blobs (n, b) VALUES (?, ?)`, i, blob)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// SQLite alone would have checkpointed at 1,000 pages; the node has
	// not yet (it waits to be idle): the rows are all in the WAL.
	if pages := db.walPages.Load(); pages < checkpointIdle {
		t.Fatalf("WAL at %d pages after %d page-sized commits", pages, n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for db.walPages.Load() != 0 || size() < before+int64(n)*4096 {
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint while idle: WAL at %d pages, database file %d bytes", db.walPages.Load(), size())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var count int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM blobs WHERE b = ?`, blob).Scan(&count); err != nil || count != n {
		t.Fatalf("%d of %d rows read back (%v)", count, n, err)
	}
}
