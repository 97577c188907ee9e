// Package storage owns Hearth's SQLite database: opening it with the right
// pragmas, versioned migrations, and the single group-committing writer.
//
// Every component keeps its tables and queries in its own file here; the
// rest of the node never sees SQL. The VFS is chosen by the caller (the
// browser supplies its own), so this package has no platform code and must
// not import any other hearth package.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// Options say where the database lives and how it may be shared.
type Options struct {
	// Path is the database file name as the VFS understands it.
	Path string
	// VFS names a registered SQLite VFS; empty means the OS file system.
	VFS string
	// Exclusive runs one connection with locking_mode=EXCLUSIVE, for VFSes
	// without shared memory (the browser). Readers then share the writer.
	Exclusive bool
	// Readers is the number of read connections (default 4).
	Readers int
	// Compact is a string that recurs in most stored event JSON (the
	// node's server name): it is stored as one byte (see compact.go).
	Compact string
}

// DB is the node's database: one writer connection whose commits take
// every write waiting (see Write), many readers.
type DB struct {
	w, r *sql.DB
	done chan struct{}
	once sync.Once
	// wmu guards the writes waiting for a commit and who commits them.
	wmu       sync.Mutex
	pending   []*writeReq
	leading   bool // a caller is committing (see Write)
	closed    bool
	lastWrite time.Time
	idle      *time.Timer // idleCheckpoint
	// prepared statements, by query text: SQLite parsing costs more than
	// running most of our statements.
	wstmts, rstmts sync.Map
	unprepared     atomic.Bool
	// walPages is the WAL's size after the last commit (see lead).
	walPages atomic.Int64
	compact  []byte
	recent   recentTxns
	fedTxns  fedTxnsWaiting
	// streamPos is the newest stream position committed (0: not read
	// yet); only whoever commits touches it (see NextStreamPos).
	streamPos int64
}

type writeReq struct {
	ctx context.Context
	fn  func(*Tx) error
	err chan error
}

// Tx is a write transaction. Its statements are prepared once and reused.
type Tx struct {
	tx *sql.Tx
	db *DB
	// statements prepared on this transaction, for queries the writer has
	// not prepared yet: a transaction that inputs thousands of events (a
	// remote join) must not parse each query thousands of times.
	local map[string]*sql.Stmt
	// what recentTxns learns once this commits: the transactions stored,
	// and the first and newest events
	txns                  []txnNote
	firstEvent, lastEvent int64
	// the newest stream position handed out (see NextStreamPos)
	streamPos int64
}

// stmt returns a prepared form of q for this transaction, or nil if q
// cannot be prepared (several statements in one string). The writer has
// one connection, busy with this transaction, so statements new to it are
// prepared on the transaction now and on the writer after the commit (see
// prepareWrites).
func (t *Tx) stmt(q string) *sql.Stmt {
	v, ok := t.db.wstmts.Load(q)
	if st, isStmt := v.(*sql.Stmt); isStmt {
		return t.tx.Stmt(st)
	}
	if ok && v == true {
		return nil
	}
	if st := t.local[q]; st != nil {
		return st
	}
	t.db.wstmts.LoadOrStore(q, false) // to prepare after the commit
	t.db.unprepared.Store(true)
	st, err := t.tx.Prepare(q)
	if err != nil {
		return nil
	}
	if t.local == nil {
		t.local = map[string]*sql.Stmt{}
	}
	t.local[q] = st
	return st
}

// Exec runs a statement in the transaction.
func (t *Tx) Exec(q string, args ...any) (sql.Result, error) {
	if s := t.stmt(q); s != nil {
		return s.Exec(args...)
	}
	return t.tx.Exec(q, args...)
}

// Insert runs an INSERT and returns the new row's rowid (its INTEGER
// PRIMARY KEY). Cheaper than RETURNING, which SQLite serves through a
// temporary table opened for each statement (felt in the browser).
func (t *Tx) Insert(q string, args ...any) (int64, error) {
	res, err := t.Exec(q, args...)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// QueryRow runs a query expected to return at most one row.
func (t *Tx) QueryRow(q string, args ...any) *sql.Row {
	if s := t.stmt(q); s != nil {
		return s.QueryRow(args...)
	}
	return t.tx.QueryRow(q, args...)
}

// Query runs a query in the transaction.
func (t *Tx) Query(q string, args ...any) (*sql.Rows, error) {
	if s := t.stmt(q); s != nil {
		return s.Query(args...)
	}
	return t.tx.Query(q, args...)
}

// prepareWrites prepares the statements transactions asked for, while the
// writer's connection is free.
func (db *DB) prepareWrites() {
	if !db.unprepared.Swap(false) {
		return
	}
	db.wstmts.Range(func(q, v any) bool {
		if v == false {
			if s, err := db.w.Prepare(q.(string)); err == nil {
				db.wstmts.Store(q, s)
			} else {
				db.wstmts.Store(q, true) // not preparable (e.g. several statements)
			}
		}
		return true
	})
}

func (db *DB) prepare(cache *sync.Map, pool *sql.DB, q string) (*sql.Stmt, error) {
	if s, ok := cache.Load(q); ok {
		return s.(*sql.Stmt), nil
	}
	s, err := pool.Prepare(q)
	if err != nil {
		return nil, err
	}
	if prev, loaded := cache.LoadOrStore(q, s); loaded {
		s.Close()
		return prev.(*sql.Stmt), nil
	}
	return s, nil
}

// withLimit appends a literal LIMIT to q. With this SQLite build (STAT4)
// a bound LIMIT expires the prepared statement at every execution, so it
// would be parsed and planned again each time.
func withLimit(q string, n int) string { return q + " LIMIT " + strconv.Itoa(n) }

// QueryRow runs a read query expected to return at most one row, with a
// prepared statement from the read pool.
func (db *DB) QueryRow(ctx context.Context, q string, args ...any) *sql.Row {
	s, err := db.prepare(&db.rstmts, db.r, q)
	if err != nil {
		return db.r.QueryRowContext(ctx, q, args...)
	}
	return s.QueryRowContext(ctx, args...)
}

// Query runs a read query with a prepared statement from the read pool.
func (db *DB) Query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	s, err := db.prepare(&db.rstmts, db.r, q)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}

// maxBatch bounds how many writes share one commit.
const maxBatch = 256

// Open opens (creating if needed) the database.
func Open(opts Options) (*DB, error) {
	q := url.Values{}
	if opts.VFS != "" {
		q.Set("vfs", opts.VFS)
	}
	pragmas := []string{"busy_timeout(10000)"}
	if opts.Exclusive {
		pragmas = append(pragmas, "locking_mode(exclusive)")
	}
	// WAL with synchronous=NORMAL survives a killed process; a power cut
	// may drop the last commits, never corrupt the file. The in-memory
	// VFS (the browser's fallback) cannot hold a WAL file.
	journal := "journal_mode(wal)"
	if opts.VFS == "memdb" {
		journal = "journal_mode(memory)"
	}
	pragmas = append(pragmas, journal, "synchronous(normal)", "foreign_keys(off)", "temp_store(memory)")
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	dsn := "file:" + (&url.URL{Path: opts.Path}).EscapedPath() + "?" + q.Encode()

	// Each connection's page cache lives in its own SQLite heap: the
	// writer keeps 4 MiB of hot pages, readers 1 MiB each (the OS caches
	// the file too), which keeps the node's memory small.
	db := &DB{done: make(chan struct{})}
	db.idle = time.AfterFunc(time.Hour, db.idleCheckpoint)
	db.idle.Stop()
	w, err := openPool(dsn+"&_txlock=immediate&_pragma=cache_size(-4000)", "BEGIN IMMEDIATE", &db.walPages)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", opts.Path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := w.Ping(); err != nil {
		w.Close()
		return nil, fmt.Errorf("storage: open %s: %w", opts.Path, err)
	}
	db.w, db.r = w, w
	if opts.Compact != "" {
		db.compact = []byte(opts.Compact)
	}
	if !opts.Exclusive {
		n := opts.Readers
		if n <= 0 {
			n = 4
		}
		r, err := openPool(dsn+"&_pragma=query_only(1)&_pragma=cache_size(-1000)", "BEGIN", nil)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("storage: open readers %s: %w", opts.Path, err)
		}
		r.SetMaxOpenConns(n)
		r.SetMaxIdleConns(n)
		r.SetConnMaxLifetime(0)
		db.r = r
	}
	return db, nil
}

// Close refuses further writes and closes every connection.
func (db *DB) Close() error {
	var err error
	db.once.Do(func() {
		db.flushFedTxns()
		db.wmu.Lock()
		db.closed = true
		db.wmu.Unlock()
		db.idle.Stop()
		close(db.done)
		for _, m := range []*sync.Map{&db.wstmts, &db.rstmts} {
			m.Range(func(_, s any) bool {
				if st, ok := s.(*sql.Stmt); ok {
					st.Close()
				}
				return true
			})
		}
		if db.r != db.w {
			err = db.r.Close()
		}
		if e := db.w.Close(); e != nil {
			err = e
		}
	})
	return err
}

// R is the pool to read from. Never use it inside a Write function: use
// the transaction given there. Prefer db.Query/QueryRow, which reuse
// prepared statements.
func (db *DB) R() *sql.DB { return db.r }

// ErrClosed is returned by writes to a closed database.
var ErrClosed = errors.New("storage: database closed")

// Write runs fn in a write transaction and returns once it is committed
// (or fn failed, in which case none of fn's writes persist). Concurrent
// writes share one commit: each runs under its own savepoint, so one
// failing write does not undo its neighbours.
//
// There is no writer goroutine: the first caller to find no commit in
// progress commits, on its own goroutine, everything waiting (its own
// write among it), and hands the role to a waiting caller if more came
// meanwhile. A lone write then runs where it was asked for, without the
// two hand-offs between goroutines that a writer goroutine costs: on two
// cores each may wake a thread on the other one.
func (db *DB) Write(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req := &writeReq{ctx: ctx, fn: fn, err: make(chan error, 1)}
	db.wmu.Lock()
	if db.closed {
		db.wmu.Unlock()
		return ErrClosed
	}
	db.pending = append(db.pending, req)
	lead := !db.leading
	db.leading = true
	db.wmu.Unlock()
	if lead {
		db.lead()
	}
	for {
		select {
		case err := <-req.err:
			if err == errLead {
				db.lead()
				continue
			}
			return err
		case <-db.done:
			return ErrClosed
		}
	}
}

// errLead, sent to a waiting write, makes its caller the one committing.
var errLead = errors.New("storage: lead")

// lead commits one batch of the waiting writes, then hands the role on:
// to the first write still waiting, or to nobody. Holding it for longer
// would keep the caller's own answer waiting on other callers' commits.
func (db *DB) lead() {
	db.wmu.Lock()
	batch := db.pending[:min(len(db.pending), maxBatch)]
	db.pending = db.pending[len(batch):]
	db.wmu.Unlock()
	if len(batch) > 0 {
		db.commit(batch)
		db.prepareWrites()
		if db.walPages.Load() >= checkpointBusy {
			db.checkpoint()
		}
	}
	db.wmu.Lock()
	defer db.wmu.Unlock()
	db.lastWrite = time.Now()
	if len(db.pending) == 0 && db.walPages.Load() >= checkpointIdle {
		db.idle.Reset(checkpointAfter)
	}
	db.handOff()
}

// handOff ends a turn at committing, with wmu held: the first write
// waiting takes it, or nobody.
func (db *DB) handOff() {
	if len(db.pending) > 0 {
		db.pending[0].err <- errLead
		return
	}
	db.pending = nil // the last batch's array, with its requests, can go
	db.leading = false
}

// idleCheckpoint runs once writes have paused for checkpointAfter: SQLite
// would checkpoint inside the commit that takes the WAL past 1,000 pages,
// making that write wait (40 ms in the browser); the node checkpoints
// while idle instead, or between batches when the WAL is past
// checkpointBusy.
func (db *DB) idleCheckpoint() {
	db.wmu.Lock()
	if db.leading || db.closed || time.Since(db.lastWrite) < checkpointAfter {
		db.wmu.Unlock()
		return
	}
	db.leading = true
	db.wmu.Unlock()
	db.checkpoint()
	db.wmu.Lock()
	defer db.wmu.Unlock()
	db.handOff()
}

// When the node checkpoints: after checkpointAfter without writes once
// the WAL holds checkpointIdle pages, and at once past checkpointBusy
// (SQLite's own threshold: a busy node's WAL stays as small as before).
const (
	checkpointIdle  = 256
	checkpointBusy  = 1000
	checkpointAfter = time.Second
)

// checkpoint copies the WAL's pages into the database file without
// waiting for readers (PASSIVE); the next commit then starts the WAL
// afresh if no reader still needs it.
func (db *DB) checkpoint() {
	ctx := context.Background()
	c, err := db.w.Conn(ctx)
	if err == nil {
		err = c.Raw(func(dc any) error {
			if sc, ok := dc.(interface{ Raw() *sqlite3.Conn }); ok {
				_, _, err := sc.Raw().WALCheckpoint("main", sqlite3.CHECKPOINT_PASSIVE)
				return err
			}
			return nil
		})
		c.Close()
	}
	if err != nil {
		slog.Warn("storage: checkpoint", "err", err)
	}
	db.walPages.Store(0) // until the next commit says otherwise
}

// commit runs one batch of writes in a single transaction.
func (db *DB) commit(batch []*writeReq) {
	ctx := context.Background()
	stx, err := db.w.BeginTx(ctx, nil)
	tx := &Tx{tx: stx, db: db, streamPos: db.streamPos}
	if err != nil {
		for _, req := range batch {
			req.err <- fmt.Errorf("storage: begin: %w", err)
		}
		return
	}
	// Records waiting for a commit go into this one (see PutFedTxn).
	fedTxns := db.fedTxns.write(tx)
	errs := make([]error, len(batch))
	for i, req := range batch {
		if err := req.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if len(batch) == 1 {
			errs[i] = req.fn(tx)
			continue
		}
		if _, err := tx.Exec("SAVEPOINT w"); err != nil {
			errs[i] = fmt.Errorf("storage: savepoint: %w", err)
			continue
		}
		notes, first, last := len(tx.txns), tx.firstEvent, tx.lastEvent
		if errs[i] = req.fn(tx); errs[i] != nil {
			if _, err := tx.Exec("ROLLBACK TO w"); err != nil {
				errs[i] = errors.Join(errs[i], err)
			}
			tx.txns, tx.firstEvent, tx.lastEvent = tx.txns[:notes], first, last
		}
		if _, err := tx.Exec("RELEASE w"); err != nil {
			errs[i] = errors.Join(errs[i], err)
		}
	}
	if len(batch) == 1 && errs[0] != nil {
		stx.Rollback()
		batch[0].err <- errs[0]
		return
	}
	if err := stx.Commit(); err != nil {
		for _, req := range batch {
			req.err <- fmt.Errorf("storage: commit: %w", err)
		}
		return
	}
	db.streamPos = tx.streamPos
	db.recent.publish(tx.txns, tx.firstEvent, tx.lastEvent)
	db.fedTxns.done(fedTxns)
	for i, req := range batch {
		req.err <- errs[i]
	}
}

// Migrate brings one component's tables up to date. steps[i] takes the
// component from version i to i+1; applied steps are never edited, only
// appended to.
func (db *DB) Migrate(component string, steps []string) error {
	return db.Write(context.Background(), func(tx *Tx) error {
		if _, err := tx.Exec(`CREATE TABLE IF NOT EXISTS schema_versions (
			component TEXT PRIMARY KEY, version INTEGER NOT NULL)`); err != nil {
			return fmt.Errorf("storage: migrate %s: %w", component, err)
		}
		var v int
		err := tx.QueryRow(`SELECT version FROM schema_versions WHERE component = ?`, component).Scan(&v)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("storage: migrate %s: %w", component, err)
		}
		if v > len(steps) {
			return fmt.Errorf("storage: %s schema version %d is newer than this binary (%d)", component, v, len(steps))
		}
		for ; v < len(steps); v++ {
			if _, err := tx.Exec(steps[v]); err != nil {
				return fmt.Errorf("storage: migrate %s to %d: %w", component, v+1, err)
			}
		}
		_, err = tx.Exec(`INSERT INTO schema_versions (component, version) VALUES (?, ?)
			ON CONFLICT (component) DO UPDATE SET version = excluded.version`, component, v)
		return err
	})
}
