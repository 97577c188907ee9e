package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"hearth/node/internal/testnet/testnode"
	"hearth/node/roomserver"
)

// network is whole nodes in one process (see testnode).
type network struct{ *testnode.Network }

type hnode struct{ *testnode.Server }

func newNetwork(t testing.TB) network { return network{testnode.New(t)} }

func (n network) add() *hnode { return &hnode{n.Add()} }

// user is a logged-in client of one node.
type user struct{ *testnode.Client }

func (h *hnode) register(t testing.TB, name string) *user {
	return &user{h.Register(t, name, "correct horse")}
}

type clientEvent struct {
	EventID  string          `json:"event_id"`
	Type     string          `json:"type"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// history pages /messages back from the newest event until the server
// says there is no more, returning the events oldest first.
func (u *user) history(roomID string, limit int) []clientEvent {
	u.T.Helper()
	var all []clientEvent
	from := ""
	for page := 0; page < 1000; page++ {
		q := url.Values{"dir": {"b"}, "limit": {fmt.Sprint(limit)}}
		if from != "" {
			q.Set("from", from)
		}
		var res struct {
			Chunk []clientEvent `json:"chunk"`
			End   string        `json:"end"`
		}
		u.Do("GET", "/rooms/"+url.PathEscape(roomID)+"/messages?"+q.Encode(), nil, &res)
		all = append(all, res.Chunk...)
		if res.End == "" {
			for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
				all[i], all[j] = all[j], all[i]
			}
			return all
		}
		from = res.End
	}
	u.T.Fatal("history did not end after 1000 pages")
	return nil
}

func (u *user) createRoom(body map[string]any) string {
	var res struct {
		RoomID string `json:"room_id"`
	}
	u.Do("POST", "/createRoom", body, &res)
	return res.RoomID
}

func (u *user) send(roomID, body string, txn int) {
	u.Do("PUT", fmt.Sprintf("/rooms/%s/send/m.room.message/t%d", url.PathEscape(roomID), txn),
		map[string]string{"msgtype": "m.text", "body": body}, nil)
}

func (u *user) join(roomID, via string) {
	u.Do("POST", "/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(via), map[string]any{}, nil)
}

func bodies(evs []clientEvent) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.message" {
			var c struct {
				Body string `json:"body"`
			}
			json.Unmarshal(e.Content, &c)
			out = append(out, c.Body)
		}
	}
	return out
}

// TestLateJoinerBackfills: a node that joins a room late pages its
// history back to the room's creation, fetched from the server that holds
// it; a third node does the same from the second once the first is gone;
// and "joined" history visibility keeps earlier messages from a late
// joiner.
func TestLateJoinerBackfills(t *testing.T) {
	net := newNetwork(t)
	a, b, c := net.add(), net.add(), net.add()
	alice, bob, carol := a.register(t, "alice"), b.register(t, "bob"), c.register(t, "carol")

	room := alice.createRoom(map[string]any{"preset": "public_chat", "name": "history"})
	const n = 1000
	for i := range n {
		alice.send(room, fmt.Sprint("m", i), i)
	}
	bob.join(room, a.Name)
	got := bob.history(room, 100)
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprint("m", i)
	}
	if b := bodies(got); strings.Join(b, ",") != strings.Join(want, ",") {
		t.Fatalf("bob's history has %d messages, want all %d in order (first %v)", len(b), n, b[:min(5, len(b))])
	}
	if got[0].Type != "m.room.create" {
		t.Fatalf("bob's history starts with %s, not the room's creation", got[0].Type)
	}
	seen := map[string]bool{}
	for _, e := range got {
		if seen[e.EventID] {
			t.Fatalf("event %s served twice", e.EventID)
		}
		seen[e.EventID] = true
	}

	// With A gone, C gets the same history from B.
	net.SetDown(a.Name, true)
	carol.join(room, b.Name)
	if got := bodies(carol.history(room, 100)); len(got) != n {
		t.Fatalf("with A down, carol's history has %d messages, want %d", len(got), n)
	}
	net.SetDown(a.Name, false)

	// "joined" visibility: a late joiner sees nothing from before.
	secret := alice.createRoom(map[string]any{"preset": "public_chat", "initial_state": []map[string]any{{
		"type": "m.room.history_visibility", "state_key": "", "content": map[string]string{"history_visibility": "joined"}}}})
	alice.send(secret, "before bob", 1)
	bob.join(secret, a.Name)
	alice.send(secret, "after bob", 2)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b := bodies(bob.history(secret, 50))
		if len(b) > 0 && b[len(b)-1] == "after bob" {
			if strings.Contains(strings.Join(b, ","), "before bob") {
				t.Fatalf("bob sees a message from before he joined a \"joined\" room: %v", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob never saw the message sent after he joined: %v", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkBackfill10k: a node joins a room of 10,000 messages held by
// another and pages all of its history back (pages of 1,000).
func BenchmarkBackfill10k(b *testing.B) {
	net := newNetwork(b)
	a := net.add()
	alice := a.register(b, "alice")
	room := alice.createRoom(map[string]any{"preset": "public_chat"})
	const n = 10000
	for i := 0; i < n; i += 100 {
		evs := make([]roomserver.NewEvent, 100)
		for j := range evs {
			evs[j] = roomserver.NewEvent{Sender: alice.ID, Type: "m.room.message", Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"m%d"}`, i+j))}
		}
		if _, err := a.Node.Room.Send(context.Background(), room, evs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bn := net.add()
		bob := bn.register(b, "bob")
		start := time.Now()
		bob.join(room, a.Name)
		got := bodies(bob.history(room, 1000))
		if len(got) != n {
			b.Fatalf("backfilled %d messages, want %d", len(got), n)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/10k-events")
	}
}
