package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"
)

// TestCrashKeepsAcknowledgedEvents kills bin/hearth with SIGKILL while four
// clients send, restarts it on the same data dir and checks the promise of
// issue 2: every event the node acknowledged (HTTP 200) is there, the
// sends that were in flight take effect at most once when retried with
// their transaction IDs, and the room still works.
func TestCrashKeepsAcknowledgedEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	data := t.TempDir()

	p := startHearth(t, data)
	alice := newClient(p.URL)
	if err := alice.register(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	if err := alice.do(ctx, "POST", "/_matrix/client/v3/createRoom",
		map[string]any{"preset": "private_chat", "name": "crash"}, &created); err != nil {
		t.Fatal(err)
	}
	room := created.RoomID

	// Four senders; each records what was acknowledged and the one send
	// that was in flight when the node died.
	const senders = 4
	type sent struct{ txn, body, eventID string }
	var (
		mu       sync.Mutex
		acked    []sent
		inFlight []sent
		wg       sync.WaitGroup
	)
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				s := sent{txn: fmt.Sprintf("crash-%d-%d", g, i), body: fmt.Sprintf("message %d-%d", g, i)}
				var res struct {
					EventID string `json:"event_id"`
				}
				err := alice.do(sendCtx, "PUT", roomPath(room, "send", "m.room.message", s.txn),
					map[string]any{"msgtype": "m.text", "body": s.body}, &res)
				var me *mxError
				if errors.As(err, &me) {
					// An HTTP answer: the node is alive. Back off when
					// rate-limited, else it is a bug.
					if me.Status == 429 {
						time.Sleep(time.Duration(max(me.RetryAfterMS, 10)) * time.Millisecond)
						i--
						continue
					}
					t.Errorf("send %s while the node was up: %v", s.txn, err)
				}
				mu.Lock()
				if err == nil {
					s.eventID = res.EventID
					acked = append(acked, s)
				} else {
					inFlight = append(inFlight, s)
				}
				mu.Unlock()
				if err != nil {
					return // the node is gone (or the test timed out)
				}
			}
		}()
	}

	// Kill once a good number of sends were acknowledged, with the four
	// senders still going.
	deadline := time.Now().Add(60 * time.Second)
	for ackedCount() < 1000 && time.Now().Before(deadline) && !t.Failed() {
		time.Sleep(5 * time.Millisecond)
	}
	p.kill()
	wg.Wait()
	stopSending()
	if len(acked) == 0 {
		t.Fatalf("no send was acknowledged before the kill; in flight: %v", inFlight)
	}
	t.Logf("killed with %d sends acknowledged and %d in flight", len(acked), len(inFlight))

	// Restart on the same data; the access token must still work.
	p = startHearth(t, data)
	alice.base = p.URL

	for _, s := range acked {
		var ev struct {
			EventID string `json:"event_id"`
			Type    string `json:"type"`
			Sender  string `json:"sender"`
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		}
		if err := alice.do(ctx, "GET", roomPath(room, "event", s.eventID), nil, &ev); err != nil {
			t.Errorf("acknowledged %s (%s) lost: %v", s.eventID, s.txn, err)
			continue
		}
		if ev.EventID != s.eventID || ev.Type != "m.room.message" || ev.Sender != alice.userID || ev.Content.Body != s.body {
			t.Errorf("acknowledged %s came back as %+v", s.eventID, ev)
		}
	}

	// Retrying the in-flight sends with their transaction IDs must not
	// duplicate what the node stored before it died.
	for _, s := range inFlight {
		if err := alice.do(ctx, "PUT", roomPath(room, "send", "m.room.message", s.txn),
			map[string]any{"msgtype": "m.text", "body": s.body}, nil); err != nil {
			t.Errorf("retry of in-flight %s after restart: %v", s.txn, err)
		}
	}

	// The room's history has every body exactly once, and acknowledged
	// events under the IDs the node gave them.
	bodies := roomMessages(ctx, t, alice, room)
	for _, s := range acked {
		if ids := bodies[s.body]; len(ids) != 1 || ids[0] != s.eventID {
			t.Errorf("acknowledged %q: in history as %v, want [%s]", s.body, ids, s.eventID)
		}
	}
	for _, s := range inFlight {
		if ids := bodies[s.body]; len(ids) != 1 {
			t.Errorf("in-flight %q retried: in history %d times, want once", s.body, len(ids))
		}
	}

	// The room's state is whole: the create event and alice's join.
	var state []struct {
		Type     string         `json:"type"`
		StateKey string         `json:"state_key"`
		Content  map[string]any `json:"content"`
	}
	if err := alice.do(ctx, "GET", roomPath(room, "state"), nil, &state); err != nil {
		t.Fatalf("GET /state after restart: %v", err)
	}
	var hasCreate, aliceJoined bool
	for _, ev := range state {
		hasCreate = hasCreate || ev.Type == "m.room.create"
		aliceJoined = aliceJoined || ev.Type == "m.room.member" && ev.StateKey == alice.userID && ev.Content["membership"] == "join"
	}
	if !hasCreate || !aliceJoined {
		t.Errorf("state after restart: create %v, alice joined %v (%d events)", hasCreate, aliceJoined, len(state))
	}
	var member map[string]any
	if err := alice.do(ctx, "GET", roomPath(room, "state", "m.room.member", alice.userID), nil, &member); err != nil || member["membership"] != "join" {
		t.Errorf("alice's member event after restart: %v %v", member, err)
	}

	// And the room takes new events.
	var res struct {
		EventID string `json:"event_id"`
	}
	if err := alice.do(ctx, "PUT", roomPath(room, "send", "m.room.message", "after-crash"),
		map[string]any{"msgtype": "m.text", "body": "still here"}, &res); err != nil || res.EventID == "" {
		t.Errorf("send after restart: %q %v", res.EventID, err)
	}
	p.stop(t, 15*time.Second)
}

// roomMessages pages back through a room's whole history with /messages
// and returns the event IDs of m.room.message events by body.
func roomMessages(ctx context.Context, t *testing.T, c *mxClient, room string) map[string][]string {
	t.Helper()
	bodies := map[string][]string{}
	from := ""
	for page := 0; ; page++ {
		if page > 10000 {
			t.Fatal("/messages does not end")
		}
		q := url.Values{"dir": {"b"}, "limit": {"100"}}
		if from != "" {
			q.Set("from", from)
		}
		var res struct {
			Chunk []struct {
				EventID string `json:"event_id"`
				Type    string `json:"type"`
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			} `json:"chunk"`
			End string `json:"end"`
		}
		if err := c.do(ctx, "GET", roomPath(room, "messages")+"?"+q.Encode(), nil, &res); err != nil {
			t.Fatalf("/messages from %q: %v", from, err)
		}
		for _, ev := range res.Chunk {
			if ev.Type == "m.room.message" {
				bodies[ev.Content.Body] = append(bodies[ev.Content.Body], ev.EventID)
			}
		}
		if res.End == "" || len(res.Chunk) == 0 {
			return bodies
		}
		from = res.End
	}
}
