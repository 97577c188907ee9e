//go:build js

package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestFedKindNamesTheEndpoint(t *testing.T) {
	for path, want := range map[string]string{
		"/_matrix/federation/v2/send_join/!r:x/$e": "send_join",
		"/_matrix/federation/v1/backfill/!r:x":     "backfill",
		"/_matrix/key/v2/server":                   "key",
		"/somewhere/else":                          "other",
	} {
		if got := fedKind(path); got != want {
			t.Errorf("fedKind(%q) = %q, want %q", path, got, want)
		}
	}
}

// The activity a join shows while it runs: a request in flight with the
// bytes read so far, then the totals once its answer is read.
func TestFedActivityCountsAnswersAsTheyAreRead(t *testing.T) {
	a := newFedActivity()
	body := strings.Repeat("x", 3000)
	rt := a.wrap(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(body))}, nil
	}))
	req, _ := http.NewRequest("PUT", "matrix://k51peer/_matrix/federation/v2/send_join/!r:x/$e", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	st := a.status()
	if len(st.Active) != 1 || st.Active[0].Kind != "send_join" || st.Active[0].Destination != "k51peer" || st.Active[0].Bytes != 1000 {
		t.Fatalf("in flight: %+v", st.Active)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	st = a.status()
	if len(st.Active) != 0 {
		t.Fatalf("still in flight after EOF: %+v", st.Active)
	}
	if d := st.Done["send_join"]; d == nil || d.Requests != 1 || d.Bytes != 3000 || d.Failed != 0 {
		t.Fatalf("done: %+v", st.Done)
	}
}

func TestFedActivityCountsFailures(t *testing.T) {
	a := newFedActivity()
	rt := a.wrap(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 404, Body: io.NopCloser(strings.NewReader("{}"))}, nil
	}))
	req, _ := http.NewRequest("GET", "matrix://k51peer/_matrix/federation/v1/backfill/!r:x", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := a.status().Done["backfill"]; d == nil || d.Requests != 1 || d.Failed != 1 {
		t.Fatalf("done: %+v", a.status().Done)
	}
}
