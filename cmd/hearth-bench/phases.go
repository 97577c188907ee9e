package main

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"sync"
	"time"
)

// bench holds the users and the room the phases share.
type bench struct {
	cfg     config
	sender  *client   // creates the room, sends sequentially and for latency
	workers []*client // concurrent senders
	reader  *client   // syncs and paginates
	roomID  string

	mu   sync.Mutex
	sent map[string]string // event ID → body of every acknowledged send
}

func (b *bench) record(eventID, body string) {
	b.mu.Lock()
	b.sent[eventID] = body
	b.mu.Unlock()
}

// setup registers the users, creates a public room and joins everyone.
func (b *bench) setup(ctx context.Context, newClient func() *client, prefix string) error {
	b.sent = map[string]string{}
	b.sender = newClient()
	if err := b.sender.register(ctx, prefix+"sender"); err != nil {
		return err
	}
	b.reader = newClient()
	if err := b.reader.register(ctx, prefix+"reader"); err != nil {
		return err
	}
	for i := range b.cfg.Workers {
		w := newClient()
		if err := w.register(ctx, fmt.Sprintf("%sworker%d", prefix, i)); err != nil {
			return err
		}
		b.workers = append(b.workers, w)
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	if err := b.sender.do(ctx, "POST", "/_matrix/client/v3/createRoom",
		map[string]any{"preset": "public_chat", "name": "hearth-bench"}, &created); err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	b.roomID = created.RoomID
	for _, c := range append([]*client{b.reader}, b.workers...) {
		if err := c.do(ctx, "POST", "/_matrix/client/v3/join/"+url.PathEscape(b.roomID), map[string]any{}, nil); err != nil {
			return fmt.Errorf("join %s: %w", c.userID, err)
		}
	}
	return nil
}

// sequential sends n messages one after the other and returns sends/s.
func (b *bench) sequential(ctx context.Context, n int) (float64, error) {
	start := time.Now()
	for i := range n {
		body := fmt.Sprintf("seq %d", i)
		id, err := b.sender.send(ctx, b.roomID, fmt.Sprintf("seq-%d", i), body)
		if err != nil {
			return 0, fmt.Errorf("sequential send %d: %w", i, err)
		}
		b.record(id, body)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// concurrent has every worker send n messages at once and returns the
// combined sends/s.
func (b *bench) concurrent(ctx context.Context, n int) (float64, error) {
	var wg sync.WaitGroup
	errs := make([]error, len(b.workers))
	start := time.Now()
	for w, c := range b.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				body := fmt.Sprintf("conc %d-%d", w, i)
				id, err := c.send(ctx, b.roomID, fmt.Sprintf("conc-%d", i), body)
				if err != nil {
					errs[w] = fmt.Errorf("worker %d send %d: %w", w, i, err)
					return
				}
				b.record(id, body)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return float64(n*len(b.workers)) / elapsed.Seconds(), nil
}

// delivery measures send→sync latency: the reader long-polls /sync, the
// sender sends, and the time from the send's start to the reader's /sync
// answer holding the event is one sample.
func (b *bench) delivery(ctx context.Context, n int) (p50, p95 time.Duration, err error) {
	first, err := b.reader.sync(ctx, "", 0)
	if err != nil {
		return 0, 0, fmt.Errorf("reader's first sync: %w", err)
	}
	since := first.NextBatch
	samples := make([]time.Duration, 0, n)
	for i := range n {
		body := fmt.Sprintf("latency %d", i)
		type arrival struct {
			at   time.Time
			next string
			err  error
		}
		got := make(chan arrival, 1)
		go func() {
			next := since
			for {
				res, err := b.reader.sync(ctx, next, 30*time.Second)
				if err != nil {
					got <- arrival{err: err}
					return
				}
				next = res.NextBatch
				for _, ev := range res.Rooms.Join[b.roomID].Timeline.Events {
					if ev.Content.Body == body {
						got <- arrival{at: time.Now(), next: next}
						return
					}
				}
			}
		}()
		// Let the long poll reach the node before sending; if it has not,
		// the sync answers at once and the sample is still honest.
		time.Sleep(2 * time.Millisecond)
		start := time.Now()
		id, err := b.sender.send(ctx, b.roomID, fmt.Sprintf("lat-%d", i), body)
		if err != nil {
			return 0, 0, fmt.Errorf("latency send %d: %w", i, err)
		}
		b.record(id, body)
		var a arrival
		select {
		case a = <-got:
		case <-time.After(30 * time.Second):
			return 0, 0, fmt.Errorf("latency event %d did not reach /sync within 30s", i)
		}
		if a.err != nil {
			return 0, 0, fmt.Errorf("reader's sync: %w", a.err)
		}
		samples = append(samples, a.at.Sub(start))
		since = a.next
	}
	slices.Sort(samples)
	return percentile(samples, 50), percentile(samples, 95), nil
}

func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}

// initialSync times n initial /syncs of the reader and returns the median.
func (b *bench) initialSync(ctx context.Context, n int) (time.Duration, error) {
	var times []time.Duration
	for range n {
		start := time.Now()
		res, err := b.reader.sync(ctx, "", 0)
		if err != nil {
			return 0, fmt.Errorf("initial sync: %w", err)
		}
		times = append(times, time.Since(start))
		if _, ok := res.Rooms.Join[b.roomID]; !ok {
			return 0, fmt.Errorf("initial sync does not list the bench room %s as joined", b.roomID)
		}
	}
	slices.Sort(times)
	return times[len(times)/2], nil
}

// paginationResult is what back-paginating the whole room found.
type paginationResult struct {
	Pages      int
	PagesPerS  float64
	Events     int
	Missing    []string // acknowledged event IDs not returned
	Duplicates []string // event IDs returned more than once
	ReachedTop bool     // the m.room.create event came back
}

// paginate walks /messages backwards from the newest event, 100 at a
// time, to the room's creation, and checks every acknowledged event comes
// back exactly once.
func (b *bench) paginate(ctx context.Context) (*paginationResult, error) {
	b.mu.Lock()
	seen := make(map[string]int, len(b.sent)+64) // grown once, not while timing
	b.mu.Unlock()
	res := &paginationResult{}
	from := ""
	start := time.Now()
	for {
		q := url.Values{"dir": {"b"}, "limit": {"100"}}
		if from != "" {
			q.Set("from", from)
		}
		// Only the event IDs and types are read, but the whole page is
		// checked to be valid JSON (see pagejson.go).
		var page messagesPage
		if err := b.reader.do(ctx, "GET", roomPath(b.roomID, "messages")+"?"+q.Encode(), nil, &page); err != nil {
			return nil, fmt.Errorf("/messages page %d: %w", res.Pages+1, err)
		}
		res.Pages++
		for _, ev := range page.Chunk {
			seen[ev.EventID]++
			res.Events++
			if ev.Type == "m.room.create" {
				res.ReachedTop = true
			}
		}
		if page.End == "" || len(page.Chunk) == 0 {
			break
		}
		if res.Pages > 100_000 {
			return nil, fmt.Errorf("/messages did not end after %d pages", res.Pages)
		}
		from = page.End
	}
	res.PagesPerS = float64(res.Pages) / time.Since(start).Seconds()
	b.mu.Lock()
	for id := range b.sent {
		if seen[id] == 0 {
			res.Missing = append(res.Missing, id)
		}
	}
	b.mu.Unlock()
	for id, n := range seen {
		if n > 1 {
			res.Duplicates = append(res.Duplicates, id)
		}
	}
	sort.Strings(res.Missing)
	sort.Strings(res.Duplicates)
	return res, nil
}
