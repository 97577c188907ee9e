package backfill

import (
	"context"
	"testing"
	"time"

	"hearth/node/roomserver"
)

// held puts a finished read-ahead of a page from "a" in st, as readAhead
// would once the page arrived.
func held(b *Backfiller, st *roomBackfill, from ...string) *readAhead {
	ra := &readAhead{version: "11", from: from, done: make(chan struct{}), cancel: func() {},
		page: &page{server: "a", evs: make([]roomserver.Verified, 1)}}
	close(ra.done)
	ra.expire = time.AfterFunc(time.Hour, func() {})
	b.mu.Lock()
	st.ahead = ra
	b.aheads++
	b.mu.Unlock()
	return ra
}

// TestReadAheadIsUsedOnlyWhereTheBackfillStarts: a page read ahead is
// taken only by the backfill that starts exactly where it was fetched
// from (in any order), and is let go either way; so is one the caller
// stops waiting for.
func TestReadAheadIsUsedOnlyWhereTheBackfillStarts(t *testing.T) {
	ctx := context.Background()
	b := New(nil, nil, "me", nil)
	st := b.room("!r:a")

	want := held(b, st, "$1", "$2")
	if p := b.takeAhead(ctx, st, "11", []string{"$2", "$1"}); p != want.page {
		t.Fatalf("the read-ahead for the same start was not used")
	}
	held(b, st, "$1", "$2")
	if p := b.takeAhead(ctx, st, "11", []string{"$1", "$3"}); p != nil {
		t.Fatalf("a read-ahead from elsewhere was used")
	}
	held(b, st, "$1")
	if p := b.takeAhead(ctx, st, "10", []string{"$1"}); p != nil {
		t.Fatalf("a read-ahead for another room version was used")
	}
	if st.ahead != nil || b.aheads != 0 {
		t.Fatalf("read-aheads not let go: held %v, counted %d", st.ahead, b.aheads)
	}

	// Still running when the caller gives up: dropped, not waited for.
	ra := held(b, st, "$1")
	ra.done = make(chan struct{})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if p := b.takeAhead(cctx, st, "11", []string{"$1"}); p != nil || b.aheads != 0 {
		t.Fatalf("a read-ahead still running was used (%v) or kept (%d)", p, b.aheads)
	}

	// Close lets go of what rooms hold, and no more are started.
	held(b, st, "$1")
	b.Close()
	if st.ahead != nil || b.aheads != 0 {
		t.Fatalf("Close kept a read-ahead")
	}
	b.readAhead(st, "a", "!r:a", "11", []string{"$1"}, 10)
	if st.ahead != nil {
		t.Fatalf("a read-ahead started after Close")
	}
}
