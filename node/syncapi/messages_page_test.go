package syncapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"testing"

	"hearth/node/clientevent"
	"hearth/node/roomserver"
	"hearth/node/storage"
	"hearth/node/syncapi"
)

// Pages are built in recycled buffers: many clients paginating at once,
// with different limits, each still get every event exactly once, in
// order, with its own content, redactions served redacted, and
// transaction_id only on the sending device's own events.
func TestMessagesConcurrentPagination(t *testing.T) {
	h := newHarness(t)
	room := h.createRoom(alice)
	h.send(room, member(alice, bob, "invite"), member(bob, bob, "join"))
	const n = 240
	body := map[string]string{} // event ID → body
	txn := map[string]string{}  // event ID → alice's transaction ID
	var order []string          // oldest first
	for i := 0; i < n; i += 40 {
		var evs []roomserver.NewEvent
		for j := i; j < i+40; j++ {
			if j%2 == 0 {
				ev := msg(alice, fmt.Sprintf("a%d", j))
				ev.TxnDevice, ev.TxnID = clientevent.TxnDevice(alice, "DEV"), fmt.Sprintf("t%d", j)
				evs = append(evs, ev)
			} else {
				evs = append(evs, msg(bob, fmt.Sprintf("b%d \"quoted\" \u00e9", j)))
			}
		}
		for k, id := range h.send(room, evs...) {
			var c struct{ Body string }
			json.Unmarshal(evs[k].Content, &c)
			body[id], order = c.Body, append(order, id)
			if evs[k].TxnID != "" {
				txn[id] = evs[k].TxnID
			}
		}
	}
	redacted := order[17]
	h.send(room, roomserver.NewEvent{Sender: alice, Type: "m.room.redaction", Content: json.RawMessage(`{"redacts":"` + redacted + `"}`)})

	walk := func(token string, limit int) error {
		user, device, _ := cutToken(token)
		pos := map[string]int{}
		for i, id := range order {
			pos[id] = i
		}
		seen := map[string]bool{}
		last := n
		from := ""
		for pages := 0; ; pages++ {
			if pages > 1000 {
				return fmt.Errorf("%s: pagination does not end", token)
			}
			q := url.Values{"dir": {"b"}, "limit": {fmt.Sprint(limit)}}
			if from != "" {
				q.Set("from", from)
			}
			var page messagesResp
			if err := getJSON(h.srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?"+q.Encode(), token, &page); err != nil {
				return err
			}
			for _, e := range page.Chunk {
				if seen[e.EventID] {
					return fmt.Errorf("%s: %s twice", token, e.EventID)
				}
				seen[e.EventID] = true
				i, ok := pos[e.EventID]
				if !ok {
					continue // not a message of the loop
				}
				if i >= last {
					return fmt.Errorf("%s: %s out of order", token, e.EventID)
				}
				last = i
				var c struct{ Body *string }
				json.Unmarshal(e.Content, &c)
				switch {
				case e.EventID == redacted:
					if c.Body != nil || e.Unsigned["redacted_because"] == nil {
						return fmt.Errorf("%s: redacted event served as %s / %v", token, e.Content, e.Unsigned)
					}
				case c.Body == nil || *c.Body != body[e.EventID]:
					return fmt.Errorf("%s: %s has content %s, want body %q", token, e.EventID, e.Content, body[e.EventID])
				}
				want := ""
				if user == alice && device == "DEV" {
					want = txn[e.EventID]
				}
				if got, _ := e.Unsigned["transaction_id"].(string); got != want {
					return fmt.Errorf("%s: %s transaction_id %q, want %q", token, e.EventID, got, want)
				}
			}
			if page.End == "" {
				break
			}
			from = page.End
		}
		for _, id := range order {
			if !seen[id] {
				return fmt.Errorf("%s (limit %d): %s missing", token, limit, id)
			}
		}
		return nil
	}

	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for round := 0; round < 2; round++ {
		for i, token := range []string{alice + "|DEV", alice + "|OTHER", bob + "|DEV"} {
			for _, limit := range []int{7, 100} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := walk(token, limit+i); err != nil {
						errs <- err
					}
				}()
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func cutToken(token string) (user, device string, ok bool) {
	for i := len(token) - 1; i >= 0; i-- {
		if token[i] == '|' {
			return token[:i], token[i+1:], true
		}
	}
	return token, "", false
}

// getJSON is an authenticated GET that reports failures instead of
// ending the test, for use from other goroutines.
func getJSON(u, token string, out any) error {
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != 200 {
		return fmt.Errorf("GET %s: %d %s", u, res.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("GET %s: %w: %s", u, err, b)
	}
	return nil
}

// BenchmarkMessagesPage with the server name compacted in storage, as
// the node stores events (storage.Options.Compact): every page then
// restores it in each event's JSON.
func BenchmarkMessagesPageCompact(b *testing.B) {
	path := filepath.Join(b.TempDir(), "hearth.db")
	h := newHarnessOpts(b, syncapi.Config{}, storage.Options{Path: path, Compact: server})
	room := h.createRoom(alice)
	h.fill(room, alice, 4200)
	base := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/messages?dir=b&limit=100"
	from, pages := "", 0
	for b.Loop() {
		target := base
		if from != "" {
			target += "&from=" + from
		}
		body := serve(b, h.sy.HandleMessages, alice, target, map[string]string{"roomId": room})
		from = ""
		if i := bytes.LastIndex(body, []byte(`"end":"`)); i >= 0 {
			rest := body[i+len(`"end":"`):]
			from = string(rest[:bytes.IndexByte(rest, '"')])
		}
		pages++
	}
	b.ReportMetric(float64(pages)/b.Elapsed().Seconds(), "pages/s")
}
