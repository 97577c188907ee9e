//go:build js

package main

import (
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// fedActivity watches the node's outbound federation requests, so the page
// can show progress while a join or a backfill fetches a room from other
// servers: which requests are in flight, to whom, for how long, how many
// bytes have arrived, and totals for those done.
type fedActivity struct {
	mu     sync.Mutex
	seq    int64
	active map[int64]*fedRequest
	done   map[string]*fedTotal // by kind
}

type fedRequest struct {
	Kind        string  `json:"kind"` // "send_join", "backfill", "state_ids", ...
	Destination string  `json:"destination"`
	ElapsedMS   float64 `json:"elapsed_ms"`
	Bytes       int64   `json:"bytes"` // of the answer, so far
	started     time.Time
}

type fedTotal struct {
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`
	Failed   int64 `json:"failed"`
}

// fedStatus is the status page's view of fedActivity.
type fedStatus struct {
	Active []fedRequest         `json:"active"`
	Done   map[string]*fedTotal `json:"done"`
}

func newFedActivity() *fedActivity {
	return &fedActivity{active: map[int64]*fedRequest{}, done: map[string]*fedTotal{}}
}

// fedKind names a federation request by its endpoint:
// /_matrix/federation/v2/send_join/{room}/{event} is "send_join",
// /_matrix/key/v2/server is "key".
func fedKind(path string) string {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) >= 4 && parts[0] == "_matrix" {
		if parts[1] == "federation" {
			return parts[3]
		}
		return parts[1]
	}
	return "other"
}

func (a *fedActivity) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		req := &fedRequest{Kind: fedKind(r.URL.Path), Destination: r.URL.Host, started: time.Now()}
		a.mu.Lock()
		a.seq++
		id := a.seq
		a.active[id] = req
		a.mu.Unlock()
		resp, err := next.RoundTrip(r)
		if err != nil {
			a.end(id, false)
			return nil, err
		}
		resp.Body = &countingBody{ReadCloser: resp.Body, a: a, id: id, ok: resp.StatusCode < 300}
		return resp, nil
	})
}

// end moves a request from active to the totals of its kind.
func (a *fedActivity) end(id int64, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	req := a.active[id]
	if req == nil {
		return
	}
	delete(a.active, id)
	t := a.done[req.Kind]
	if t == nil {
		t = &fedTotal{}
		a.done[req.Kind] = t
	}
	t.Requests++
	t.Bytes += req.Bytes
	if !ok {
		t.Failed++
	}
}

func (a *fedActivity) status() fedStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := fedStatus{Active: make([]fedRequest, 0, len(a.active)), Done: make(map[string]*fedTotal, len(a.done))}
	for _, r := range a.active {
		c := *r
		c.ElapsedMS = ms(time.Since(r.started))
		st.Active = append(st.Active, c)
	}
	sort.Slice(st.Active, func(i, j int) bool { return st.Active[i].ElapsedMS > st.Active[j].ElapsedMS })
	for k, t := range a.done {
		c := *t
		st.Done[k] = &c
	}
	return st
}

// countingBody counts an answer's bytes as the node reads them, and ends
// the request at EOF or Close.
type countingBody struct {
	io.ReadCloser
	a    *fedActivity
	id   int64
	ok   bool
	once sync.Once
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		c.a.mu.Lock()
		if r := c.a.active[c.id]; r != nil {
			r.Bytes += int64(n)
		}
		c.a.mu.Unlock()
	}
	if err != nil {
		c.once.Do(func() { c.a.end(c.id, c.ok && err == io.EOF) })
	}
	return n, err
}

func (c *countingBody) Close() error {
	c.once.Do(func() { c.a.end(c.id, c.ok) })
	return c.ReadCloser.Close()
}
