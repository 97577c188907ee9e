//go:build js

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall/js"
	"time"

	_ "github.com/ncruces/go-sqlite3/vfs/memdb" // the fallback VFS

	"hearth/node/storage"
	"hearth/wasm/opfs"
)

var store struct {
	mu  sync.Mutex
	db  *storage.DB
	vfs string
}

func theDB() (*storage.DB, error) {
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.db == nil {
		return nil, errors.New("storage is not open")
	}
	return store.db, nil
}

// body is a row's payload, about the size of a small Matrix event.
var body = `{"type":"m.room.message","content":{"msgtype":"m.text","body":"` + strings.Repeat("hearth ", 50) + `"}}`

var probeSchema = []string{`CREATE TABLE probe_rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)`}

// storageOpen opens the database as the node will: OPFS with one
// exclusive connection, or memdb (not persistent) without OPFS.
func storageOpen(raw json.RawMessage) (any, error) {
	var args struct {
		Path string `json:"path"`
		VFS  string `json:"vfs"` // "memdb" forces the fallback, for comparison
		// Shared opens OPFS without exclusive locking: several
		// connections, a rollback journal (WAL needs exclusive mode).
		Shared bool `json:"shared"`
	}
	if err := decode(raw, &args); err != nil {
		return nil, err
	}
	if args.Path == "" {
		args.Path = "/probe.db"
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.db != nil {
		return nil, errors.New("storage is already open")
	}
	start := time.Now()
	available := args.VFS != "memdb" && opfs.Available()
	tAvailable := time.Since(start)
	opts := storage.Options{Path: args.Path, VFS: opfs.Name, Exclusive: !args.Shared}
	if !available {
		// Not Exclusive: memdb has in-process locks for several
		// connections, and in exclusive locking mode SQLite would switch
		// it to WAL and then fail to open a -wal file memdb refuses.
		opts = storage.Options{Path: "/" + strings.TrimPrefix(args.Path, "/"), VFS: "memdb"}
	}
	db, err := storage.Open(opts)
	if err != nil {
		return nil, err
	}
	tOpen := time.Since(start)
	if err := db.Migrate("probe", probeSchema); err != nil {
		db.Close()
		return nil, err
	}
	tMigrate := time.Since(start)
	store.db, store.vfs = db, opts.VFS
	var rows int
	var mode, locking string
	ctx := context.Background()
	if err := db.QueryRow(ctx, `SELECT count(*) FROM probe_rows`).Scan(&rows); err != nil {
		return nil, err
	}
	if err := db.QueryRow(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return nil, err
	}
	if err := db.QueryRow(ctx, `PRAGMA locking_mode`).Scan(&locking); err != nil {
		return nil, err
	}
	return map[string]any{
		"vfs": opts.VFS, "persistent": available, "open_ms": ms(time.Since(start)),
		"available_ms": ms(tAvailable), "sqlite_open_ms": ms(tOpen - tAvailable), "migrate_ms": ms(tMigrate - tOpen),
		"rows": rows, "journal_mode": mode, "locking_mode": locking,
	}, nil
}

// storageWrite inserts ids [start, start+count) in transactions of batch
// rows, one after the other: batch 1 is one commit per row.
func storageWrite(raw json.RawMessage) (any, error) {
	var args struct{ Start, Count, Batch int }
	if err := decode(raw, &args); err != nil {
		return nil, err
	}
	db, err := theDB()
	if err != nil {
		return nil, err
	}
	args.Batch = max(args.Batch, 1)
	ctx := context.Background()
	vfsBefore := opfs.ReadStats()
	start := time.Now()
	commits := 0
	for id := args.Start; id < args.Start+args.Count; id += args.Batch {
		end := min(id+args.Batch, args.Start+args.Count)
		err := db.Write(ctx, func(tx *storage.Tx) error {
			for i := id; i < end; i++ {
				if _, err := tx.Exec(`INSERT INTO probe_rows (id, body) VALUES (?, ?)`, i, body); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("writing rows %d..%d: %w", id, end, err)
		}
		commits++
	}
	return withVFS(rates(args.Count, commits, time.Since(start)), vfsBefore), nil
}

// storageBurst runs count one-row writes at once, as concurrent sends do:
// the writer group-commits them.
func storageBurst(raw json.RawMessage) (any, error) {
	var args struct{ Start, Count int }
	if err := decode(raw, &args); err != nil {
		return nil, err
	}
	db, err := theDB()
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	vfsBefore := opfs.ReadStats()
	start := time.Now()
	errs := make(chan error, args.Count)
	for i := args.Start; i < args.Start+args.Count; i++ {
		go func() {
			errs <- db.Write(ctx, func(tx *storage.Tx) error {
				_, err := tx.Exec(`INSERT INTO probe_rows (id, body) VALUES (?, ?)`, i, body)
				return err
			})
		}()
	}
	for range args.Count {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	return withVFS(rates(args.Count, -1, time.Since(start)), vfsBefore), nil
}

// storageSpam writes one row per commit from start on, telling the page
// (postMessage {ack: id}) once each is committed, until max rows or until
// the worker is killed: the test kills it mid-write.
func storageSpam(raw json.RawMessage) (any, error) {
	var args struct{ Start, Max int }
	if err := decode(raw, &args); err != nil {
		return nil, err
	}
	db, err := theDB()
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	for id := args.Start; id < args.Start+args.Max; id++ {
		err := db.Write(ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(`INSERT INTO probe_rows (id, body) VALUES (?, ?)`, id, body)
			return err
		})
		if err != nil {
			return nil, err
		}
		ack := js.Global().Get("Object").New()
		ack.Set("ack", id)
		js.Global().Call("postMessage", ack)
	}
	return map[string]int{"written": args.Max}, nil
}

// storageCheck counts the rows, those with ids in [from, to], and runs
// SQLite's integrity check.
func storageCheck(raw json.RawMessage) (any, error) {
	var args struct{ From, To int }
	if err := decode(raw, &args); err != nil {
		return nil, err
	}
	db, err := theDB()
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	var all, present int
	var integrity string
	if err := db.QueryRow(ctx, `SELECT count(*) FROM probe_rows`).Scan(&all); err != nil {
		return nil, err
	}
	if err := db.QueryRow(ctx, `SELECT count(*) FROM probe_rows WHERE id BETWEEN ? AND ? AND body = ?`, args.From, args.To, body).Scan(&present); err != nil {
		return nil, err
	}
	if err := db.QueryRow(ctx, `PRAGMA integrity_check`).Scan(&integrity); err != nil {
		return nil, err
	}
	var lo, hi, odd int
	if err := db.QueryRow(ctx, `SELECT coalesce(min(id), -1), coalesce(max(id), -1), count(*) FILTER (WHERE body != ?) FROM probe_rows`, body).Scan(&lo, &hi, &odd); err != nil {
		return nil, err
	}
	return map[string]any{"rows": all, "present": present, "integrity": integrity, "vfs": store.vfs, "min_id": lo, "max_id": hi, "other_body": odd}, nil
}

func storageClose(json.RawMessage) (any, error) {
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.db == nil {
		return map[string]bool{"closed": false}, nil
	}
	err := store.db.Close()
	store.db = nil
	return map[string]bool{"closed": true}, err
}

func rates(rows, commits int, d time.Duration) map[string]any {
	out := map[string]any{"rows": rows, "ms": ms(d), "rows_per_s": float64(rows) / d.Seconds()}
	if commits >= 0 {
		out["commits"] = commits
		out["commits_per_s"] = float64(commits) / d.Seconds()
	}
	return out
}

// withVFS adds what the OPFS VFS did since before: the time SQLite spent
// waiting on the browser's file calls, apart from its own work.
func withVFS(out map[string]any, before opfs.Stats) map[string]any {
	if store.vfs != opfs.Name {
		return out
	}
	after := opfs.ReadStats()
	out["vfs_sync_io_ms"] = ms(after.SyncIO - before.SyncIO)
	out["vfs_reads"] = after.Reads - before.Reads
	out["vfs_writes"] = after.Writes - before.Writes
	out["vfs_flushes"] = after.Flushes - before.Flushes
	out["vfs_async_calls"] = after.Async - before.Async
	out["vfs_async_ms"] = ms(after.AsyncWait - before.AsyncWait)
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
