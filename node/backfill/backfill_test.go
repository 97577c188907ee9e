package backfill_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"testing"

	"hearth/node/internal/testnet/testnode"
	"hearth/node/roomserver"
)

// history pages /messages back from the newest event until the server
// says there is no more, returning the event IDs oldest first.
func history(c *testnode.Client, roomID string, limit int) []string {
	c.T.Helper()
	var ids []string
	from := ""
	for range 1000 {
		q := url.Values{"dir": {"b"}, "limit": {fmt.Sprint(limit)}}
		if from != "" {
			q.Set("from", from)
		}
		var res struct {
			Chunk []struct {
				EventID string `json:"event_id"`
			} `json:"chunk"`
			End string `json:"end"`
		}
		c.Do("GET", "/rooms/"+url.PathEscape(roomID)+"/messages?"+q.Encode(), nil, &res)
		for _, e := range res.Chunk {
			ids = append(ids, e.EventID)
		}
		if res.End == "" {
			for i, j := 0, len(ids)-1; i < j; i, j = i+1, j-1 {
				ids[i], ids[j] = ids[j], ids[i]
			}
			return ids
		}
		from = res.End
	}
	c.T.Fatal("history did not end after 1000 pages")
	return nil
}

// TestPagingBackThroughForks: a late joiner pages back, a page at a time,
// through a room whose history forks (messages sent at once are built as
// siblings on one tip). Each page is read ahead while the one before is
// stored; whatever the page boundaries cut through, the joiner ends up
// with every event of the room once, each after the events it follows,
// back to the room's creation.
func TestPagingBackThroughForks(t *testing.T) {
	ctx := context.Background()
	net := testnode.New(t)
	a, b := net.Add(), net.Add()
	alice, bob := a.Register(t, "alice", ""), b.Register(t, "bob", "")
	var created struct {
		RoomID string `json:"room_id"`
	}
	alice.Do("POST", "/createRoom", map[string]any{"preset": "public_chat"}, &created)
	room := created.RoomID

	const senders, each = 4, 150
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				content := json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"s%d m%d"}`, s, i))
				if _, err := a.Node.Room.Send(ctx, room, roomserver.NewEvent{Sender: alice.ID, Type: "m.room.message", Content: content}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := history(alice, room, 500) // A holds all of it

	bob.Do("POST", "/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(a.Name), map[string]any{}, nil)
	got := history(bob, room, 40)

	// The join and what follows it are B's own; the rest is backfilled.
	at := map[string]int{}
	for i, id := range got {
		if _, dup := at[id]; dup {
			t.Fatalf("%s served twice", id)
		}
		at[id] = i
	}
	for _, id := range want {
		if _, ok := at[id]; !ok {
			t.Fatalf("B's history lacks %s (has %d of A's %d events)", id, len(got), len(want))
		}
	}
	forks := 0
	for i, id := range got {
		ev, err := a.Node.Room.Event(ctx, id)
		if err != nil {
			ev, err = b.Node.Room.Event(ctx, id)
		}
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && ev.Type() != "m.room.create" {
			t.Fatalf("B's history starts with %s, not the room's creation", ev.Type())
		}
		prevs := ev.PrevEventIDs()
		if len(prevs) > 1 {
			forks++
		}
		for _, p := range prevs {
			if j, ok := at[p]; !ok || j > i {
				t.Fatalf("event %d (%s) comes before its prev event %s (at %d, present %v)", i, id, p, j, ok)
			}
		}
	}
	if forks == 0 {
		t.Log("no forks were made: the room's history is linear on this machine")
	}
}
