//go:build js

package opfs

import (
	"sync/atomic"
	"time"
)

// Stats count the VFS's work since the worker started: how often SQLite
// called into the browser and how long it waited there, to tell the cost
// of OPFS from the cost of SQLite itself (status pages, benchmarks).
type Stats struct {
	// Synchronous calls on sync access handles and their total time.
	Reads, Writes, Flushes, Truncates, Sizes int64
	ReadBytes, WriteBytes                    int64
	SyncIO                                   time.Duration
	// Asynchronous calls (opening, probing, deleting files), each waiting
	// for a Promise, and their total time.
	Async     int64
	AsyncWait time.Duration
}

var counters struct {
	reads, writes, flushes, truncates, sizes atomic.Int64
	readBytes, writeBytes                    atomic.Int64
	syncIO, async, asyncWait                 atomic.Int64
}

// ReadStats returns the counters so far.
func ReadStats() Stats {
	return Stats{
		Reads: counters.reads.Load(), Writes: counters.writes.Load(), Flushes: counters.flushes.Load(),
		Truncates: counters.truncates.Load(), Sizes: counters.sizes.Load(),
		ReadBytes: counters.readBytes.Load(), WriteBytes: counters.writeBytes.Load(),
		SyncIO: time.Duration(counters.syncIO.Load()),
		Async:  counters.async.Load(), AsyncWait: time.Duration(counters.asyncWait.Load()),
	}
}

// timed adds the time since start to a duration counter.
func timed(d *atomic.Int64, start time.Time) { d.Add(int64(time.Since(start))) }
