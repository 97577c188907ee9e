package backfill

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"hearth/node/roomserver"
)

// held queues a finished read-ahead of a page from "a" in st, as ahead
// would once the page arrived and was verified.
func held(b *Backfiller, st *roomBackfill, from ...string) *readAhead {
	ra := &readAhead{server: "a", roomID: "!r:a", version: "11", from: from, done: make(chan struct{}), cancel: func() {},
		page: &page{server: "a", evs: make([]roomserver.Verified, 1)}}
	close(ra.done)
	ra.expire = time.AfterFunc(time.Hour, func() {})
	b.mu.Lock()
	st.ahead = append(st.ahead, ra)
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
	if len(st.ahead) != 0 || b.aheads != 0 {
		t.Fatalf("read-aheads not let go: held %v, counted %d", st.ahead, b.aheads)
	}

	// Two pages ahead: taking the first leaves the second for the next
	// backfill; a backfill that starts elsewhere drops both.
	held(b, st, "$1")
	second := held(b, st, "$2")
	b.takeAhead(ctx, st, "11", []string{"$1"})
	if p := b.takeAhead(ctx, st, "11", []string{"$2"}); p != second.page {
		t.Fatalf("the second page read ahead was not used")
	}
	held(b, st, "$1")
	held(b, st, "$2")
	if p := b.takeAhead(ctx, st, "11", []string{"$9"}); p != nil || len(st.ahead) != 0 || b.aheads != 0 {
		t.Fatalf("a backfill from elsewhere used %v or kept %d read-aheads", p, b.aheads)
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
	if len(st.ahead) != 0 || b.aheads != 0 {
		t.Fatalf("Close kept a read-ahead")
	}
	b.ahead(st, nil, "a", "!r:a", "11", []string{"$1"}, 10)
	if len(st.ahead) != 0 {
		t.Fatalf("a read-ahead started after Close")
	}
}

// TestGuessNext: before a page is verified, where history goes on is
// guessed from its oldest events' prev events.
func TestGuessNext(t *testing.T) {
	page := []json.RawMessage{
		json.RawMessage(`{"depth":12,"prev_events":["$11"]}`),
		json.RawMessage(`{"depth":10,"prev_events":["$9a","$9b"]}`),
		json.RawMessage(`{"depth":11,"prev_events":["$10"]}`),
		json.RawMessage(`{"depth":10,"prev_events":["$9b","$8"]}`),
	}
	if got, want := guessNext(page), []string{"$8", "$9a", "$9b"}; !slices.Equal(got, want) {
		t.Fatalf("guessNext = %v, want %v", got, want)
	}
	if got := guessNext(nil); len(got) != 0 {
		t.Fatalf("guessNext of nothing = %v", got)
	}
}
