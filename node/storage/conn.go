package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"sync/atomic"

	"github.com/ncruces/go-sqlite3"
	sqlite3driver "github.com/ncruces/go-sqlite3/driver"
)

// openPool opens a pool whose transactions begin with begin ("BEGIN
// IMMEDIATE" for the writer, "BEGIN" for readers). With wal, each
// connection reports the WAL's size after each commit there, and SQLite
// no longer checkpoints by itself (see DB.lead and DB.idleCheckpoint).
func openPool(dsn, begin string, wal *atomic.Int64) (*sql.DB, error) {
	c, err := (&sqlite3driver.SQLite{}).OpenConnector(dsn)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(txConnector{Connector: c, begin: begin, wal: wal}), nil
}

// txConnector hands out the driver's connections with BEGIN, COMMIT and
// ROLLBACK prepared once each. The driver runs them through
// sqlite3_exec, which parses them every time: a few µs natively, a third
// of a millisecond in the browser, twice a transaction — and every sync
// and /messages page is a transaction.
type txConnector struct {
	driver.Connector
	begin string
	wal   *atomic.Int64 // WAL pages after the last commit; nil: not asked
}

func (c txConnector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := dc.(sqliteConn)
	if !ok {
		return dc, nil
	}
	if c.wal != nil {
		// A WAL hook replaces SQLite's automatic checkpoints.
		sc.Raw().WALHook(func(_ *sqlite3.Conn, _ string, pages int) error {
			c.wal.Store(int64(pages))
			return nil
		})
	}
	return &txConn{sqliteConn: sc, beginSQL: c.begin}, nil
}

// sqliteConn is what the driver's connections implement.
type sqliteConn interface {
	sqlite3driver.Conn
	driver.ExecerContext
	driver.NamedValueChecker
}

type txConn struct {
	sqliteConn
	beginSQL                string
	begin, commit, rollback *sqlite3.Stmt
}

// BeginTx starts a transaction with the prepared BEGIN. Read-only or
// other isolation levels (which Hearth does not ask for) go to the
// driver, whose transaction then ends its own way.
func (c *txConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if opts.ReadOnly || opts.Isolation != driver.IsolationLevel(sql.LevelDefault) {
		return c.sqliteConn.BeginTx(ctx, opts)
	}
	if c.begin == nil {
		if err := c.prepare(); err != nil {
			return nil, err
		}
	}
	if err := c.begin.Exec(); err != nil {
		return nil, err
	}
	return tx{c}, nil
}

func (c *txConn) prepare() error {
	raw := c.Raw()
	for _, p := range []struct {
		st  **sqlite3.Stmt
		sql string
	}{{&c.begin, c.beginSQL}, {&c.commit, "COMMIT"}, {&c.rollback, "ROLLBACK"}} {
		st, _, err := raw.Prepare(p.sql)
		if err != nil {
			c.closeStmts()
			return err
		}
		*p.st = st
	}
	return nil
}

func (c *txConn) closeStmts() {
	for _, st := range []**sqlite3.Stmt{&c.begin, &c.commit, &c.rollback} {
		if *st != nil {
			(*st).Close()
			*st = nil
		}
	}
}

// Close finalises the prepared statements, then the connection (SQLite
// keeps a connection with statements open).
func (c *txConn) Close() error {
	c.closeStmts()
	return c.sqliteConn.Close()
}

// tx ends a transaction begun by txConn.BeginTx.
type tx struct{ c *txConn }

func (t tx) Commit() error {
	err := t.c.commit.Exec()
	if err != nil && !t.c.Raw().GetAutocommit() {
		t.c.rollback.Exec() // as the driver does: a failed COMMIT leaves nothing open
	}
	return err
}

func (t tx) Rollback() error { return t.c.rollback.Exec() }
