package roomserver_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/internal/testnet"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

const server = "hearth.test"

type harness struct {
	t    testing.TB
	name string
	net  *testnet.Net // the servers this one knows (their keys)
	path string
	db   *storage.DB
	rs   *roomserver.Roomserver
	key  ed25519.PrivateKey
	// checker, if set before open, is the roomserver's Checker.
	checker roomserver.Checker

	mu   sync.Mutex
	outs []roomserver.Output
}

func newHarness(t testing.TB) *harness { return newServer(t, server, testnet.New()) }

// newServer starts a roomserver called name that trusts the keys on net
// (shared by every server of a test, as names would be in Hearth).
func newServer(t testing.TB, name string, net *testnet.Net) *harness {
	pub, key, _ := ed25519.GenerateKey(nil)
	net.AddKey(name, pub)
	h := &harness{t: t, name: name, net: net, path: filepath.Join(t.TempDir(), "hearth.db"), key: key}
	h.open()
	t.Cleanup(h.close)
	return h
}

func (h *harness) open() {
	db, err := storage.Open(storage.Options{Path: h.path})
	if err != nil {
		h.t.Fatal(err)
	}
	rs, err := roomserver.New(db, roomserver.Config{
		ServerName: spec.ServerName(h.name), KeyID: "ed25519:p2p", PrivateKey: h.key,
		Verifier: h.net.Verifier(), Checker: h.checker,
		OnOutput: func(o []roomserver.Output) {
			h.mu.Lock()
			h.outs = append(h.outs, o...)
			h.mu.Unlock()
		},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.db, h.rs = db, rs
}

func (h *harness) close() {
	if h.rs != nil {
		h.rs.Close()
		h.db.Close()
		h.rs, h.db = nil, nil
	}
}

func (h *harness) reopen() { h.close(); h.open() }

func sk(s string) *string { return &s }

func js(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func member(user, target, membership string) roomserver.NewEvent {
	return roomserver.NewEvent{Sender: user, Type: spec.MRoomMember, StateKey: sk(target), Content: js(map[string]string{"membership": membership})}
}

func msg(user, body string) roomserver.NewEvent {
	return roomserver.NewEvent{Sender: user, Type: "m.room.message", Content: js(map[string]string{"msgtype": "m.text", "body": body})}
}

// createRoom makes a room the way the client API does for private_chat.
func (h *harness) createRoom(version gomatrixserverlib.RoomVersion, creator string) string {
	h.t.Helper()
	users := map[string]int{}
	if version != gomatrixserverlib.RoomVersionV12 {
		users[creator] = 100
	}
	id, err := h.rs.CreateRoom(context.Background(), version, creator, nil, []roomserver.NewEvent{
		member(creator, creator, "join"),
		{Sender: creator, Type: spec.MRoomPowerLevels, StateKey: sk(""), Content: js(map[string]any{"users": users, "invite": 0})},
		{Sender: creator, Type: spec.MRoomJoinRules, StateKey: sk(""), Content: js(map[string]string{"join_rule": "invite"})},
		{Sender: creator, Type: spec.MRoomHistoryVisibility, StateKey: sk(""), Content: js(map[string]string{"history_visibility": "shared"})},
	})
	if err != nil {
		h.t.Fatalf("create room v%s: %v", version, err)
	}
	return id
}

func (h *harness) send(roomID string, evs ...roomserver.NewEvent) []string {
	h.t.Helper()
	ids, err := h.rs.Send(context.Background(), roomID, evs...)
	if err != nil {
		h.t.Fatalf("send: %v", err)
	}
	return ids
}

func TestRoomLifecycleAllVersions(t *testing.T) {
	for _, v := range roomserver.SupportedVersions {
		t.Run("v"+string(v), func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			alice, bob := "@alice:"+server, "@bob:"+server
			room := h.createRoom(v, alice)

			// Bob cannot join an invite-only room uninvited.
			_, err := h.rs.Send(ctx, room, member(bob, bob, "join"))
			var fe *roomserver.ForbiddenError
			if !errors.As(err, &fe) {
				t.Fatalf("uninvited join: got %v, want ForbiddenError", err)
			}
			h.send(room, member(alice, bob, "invite"))
			h.send(room, member(bob, bob, "join"))
			ids := h.send(room, msg(bob, "hello"), msg(alice, "hi"))
			if len(ids) != 2 {
				t.Fatalf("got %d ids", len(ids))
			}
			if m, _ := h.rs.Membership(ctx, room, bob); m != "join" {
				t.Fatalf("bob's membership %q", m)
			}
			rooms, _ := h.rs.RoomsWithMembership(ctx, bob, "join")
			if len(rooms) != 1 || rooms[0] != room {
				t.Fatalf("bob's rooms %v", rooms)
			}
			state, err := h.rs.CurrentState(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			// create, 2 members, power levels, join rules, history visibility
			if len(state) != 6 {
				t.Fatalf("current state has %d events, want 6", len(state))
			}

			// A restart reloads the room and carries on the same DAG.
			h.reopen()
			ids2 := h.send(room, msg(alice, "after restart"))
			ev, err := h.rs.Event(ctx, ids2[0])
			if err != nil {
				t.Fatal(err)
			}
			if prev := ev.PrevEventIDs(); len(prev) != 1 || prev[0] != ids[1] {
				t.Fatalf("prev_events %v, want [%s]", prev, ids[1])
			}
			if m, _ := h.rs.Membership(ctx, room, bob); m != "join" {
				t.Fatalf("after restart bob's membership %q", m)
			}
		})
	}
}

func TestForbiddenAndAtomicity(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice, bob := "@alice:"+server, "@bob:"+server
	room := h.createRoom(gomatrixserverlib.RoomVersionV11, alice)
	before, _ := h.rs.CurrentState(ctx, room)

	// A request whose second event is refused stores neither.
	_, err := h.rs.Send(ctx, room,
		roomserver.NewEvent{Sender: alice, Type: "m.room.topic", StateKey: sk(""), Content: js(map[string]string{"topic": "t"})},
		msg(bob, "not a member"))
	var fe *roomserver.ForbiddenError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want ForbiddenError", err)
	}
	after, _ := h.rs.CurrentState(ctx, room)
	if len(after) != len(before) {
		t.Fatalf("refused request changed state: %d → %d events", len(before), len(after))
	}
	if topic, _ := h.rs.StateEvent(ctx, room, "m.room.topic", ""); topic != nil {
		t.Fatalf("topic stored from a refused request")
	}
	// The room still works, and the next event follows the last stored one.
	ids := h.send(room, msg(alice, "still here"))
	ev, _ := h.rs.Event(ctx, ids[0])
	if ev.Depth() != int64(len(before))+1 {
		t.Fatalf("depth %d after a refused request, want %d", ev.Depth(), len(before)+1)
	}

	// Oversized events are refused with ErrTooLarge.
	big := make([]byte, 70000)
	for i := range big {
		big[i] = 'a'
	}
	if _, err := h.rs.Send(ctx, room, msg(alice, string(big))); !errors.Is(err, roomserver.ErrTooLarge) {
		t.Fatalf("big event: %v", err)
	}
	if _, err := h.rs.Send(ctx, "!nope:"+server, msg(alice, "x")); !errors.Is(err, roomserver.ErrRoomNotFound) {
		t.Fatalf("unknown room: %v", err)
	}
}

func TestTransactionIdempotency(t *testing.T) {
	h := newHarness(t)
	alice := "@alice:" + server
	room := h.createRoom(gomatrixserverlib.RoomVersionV12, alice)
	m := msg(alice, "once")
	m.TxnDevice, m.TxnID = "DEV", "txn1"
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := h.rs.Send(context.Background(), room, m)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = got[0]
		}()
	}
	wg.Wait()
	// Once more in a quiet room: the sender runs it itself, and its write
	// finds the transaction (the others may have queued behind the first).
	again, err := h.rs.Send(context.Background(), room, m)
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, again[0])
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("same transaction gave different events: %v", ids)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, o := range h.outs {
		if o.Event.Type() == "m.room.message" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d messages entered the stream, want 1", n)
	}
}

func TestRedaction(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice, bob := "@alice:"+server, "@bob:"+server
	room := h.createRoom(gomatrixserverlib.RoomVersionV11, alice)
	h.send(room, member(alice, bob, "invite"), member(bob, bob, "join"))
	aliceMsg := h.send(room, msg(alice, "secret"))[0]
	bobMsg := h.send(room, msg(bob, "mine"))[0]

	// Bob (power 0) may not redact Alice's event: the redaction is stored
	// but the target keeps its content.
	h.send(room, roomserver.NewEvent{Sender: bob, Type: spec.MRoomRedaction, Redacts: aliceMsg, Content: js(map[string]string{"redacts": aliceMsg})})
	ev, _ := h.rs.Event(ctx, aliceMsg)
	if ev.Redacted() || !json.Valid(ev.Content()) || string(ev.Content()) == "{}" {
		t.Fatalf("bob redacted alice's event: %s", ev.Content())
	}
	// Bob may redact his own; Alice (power 100) may redact anyone's.
	h.send(room, roomserver.NewEvent{Sender: bob, Type: spec.MRoomRedaction, Redacts: bobMsg, Content: js(map[string]string{"redacts": bobMsg})})
	h.send(room, roomserver.NewEvent{Sender: alice, Type: spec.MRoomRedaction, Content: js(map[string]string{"redacts": aliceMsg})})
	for _, id := range []string{aliceMsg, bobMsg} {
		ev, _ := h.rs.Event(ctx, id)
		if !ev.Redacted() || string(ev.Content()) != "{}" {
			t.Fatalf("event %s not redacted: %s", id, ev.Content())
		}
		if !strings.Contains(string(ev.Unsigned()), `"redacted_because"`) {
			t.Fatalf("redacted event %s has no unsigned.redacted_because: %s", id, ev.Unsigned())
		}
	}
}

func TestStateSnapshotsShareBlocks(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice := "@alice:" + server
	room := h.createRoom(gomatrixserverlib.RoomVersionV11, alice)
	h.send(room, roomserver.NewEvent{Sender: alice, Type: spec.MRoomJoinRules, StateKey: sk(""), Content: js(map[string]string{"join_rule": "public"})})
	var last string
	for i := range 100 {
		u := fmt.Sprintf("@u%d:%s", i, server)
		last = h.send(room, member(u, u, "join"))[0]
	}
	// State after the last join has every member; history is intact.
	st, err := h.rs.StateAfter(ctx, last)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 5+100 {
		t.Fatalf("state after last join has %d events, want 105", len(st))
	}
	// 100 state changes rewrote one block each, not the whole state: the
	// blocks table stays far below 100 × 105 entries.
	var entries int
	if err := h.db.R().QueryRow(`SELECT COALESCE(SUM(length(entries)), 0) FROM state_blocks`).Scan(&entries); err != nil {
		t.Fatal(err)
	}
	if entries > 100*105*3*2/4 {
		t.Fatalf("state blocks hold %d bytes: snapshots are not sharing blocks", entries)
	}
}

// Concurrent sends are prepared beside the commit before them, several
// on one tip: every send is stored once, each event's parents are stored
// before it, repeated transactions give the first event, equal messages
// stay distinct events, and the room ends with one forward extremity.
func TestConcurrentSendsFormAConsistentDAG(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice := "@alice:" + server
	room := h.createRoom(gomatrixserverlib.RoomVersionV11, alice)
	const senders, each = 6, 60
	ids := make([][]string, senders)
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				body := fmt.Sprintf("from %d: %d", s, i)
				if i%10 == 0 {
					body = "same words" // equal content from every sender
				}
				m := msg(alice, body)
				txn := i
				if i >= 40 { // the first 20 sent again, among others' new sends
					txn = i - 40
				}
				m.TxnDevice, m.TxnID = "DEV", fmt.Sprintf("t%d", txn*senders+s)
				got, err := h.rs.Send(ctx, room, m)
				if err != nil {
					t.Error(err)
					return
				}
				ids[s] = append(ids[s], got[0])
			}
		})
	}
	wg.Wait()
	for s := range senders {
		for i := 40; i < each; i++ {
			if ids[s][i] != ids[s][i-40] {
				t.Fatalf("sender %d: repeated transaction gave %s, first %s", s, ids[s][i], ids[s][i-40])
			}
		}
	}
	last := h.send(room, msg(alice, "after"))[0]

	h.mu.Lock()
	defer h.mu.Unlock()
	pos := map[string]int{}
	for i, o := range h.outs {
		if _, dup := pos[o.Event.EventID()]; dup {
			t.Fatalf("%s entered the stream twice", o.Event.EventID())
		}
		pos[o.Event.EventID()] = i
		for _, p := range o.Event.PrevEventIDs() {
			if j, ok := pos[p]; !ok || j >= i {
				t.Fatalf("%s entered the stream before its parent %s", o.Event.EventID(), p)
			}
		}
	}
	for s := range senders {
		for _, id := range ids[s] {
			if _, ok := pos[id]; !ok {
				t.Fatalf("acknowledged %s is not in the stream", id)
			}
		}
	}
	if n := len(pos); n != senders*40+6 { // 6: create, member, PL, join rules, visibility, "after"
		t.Fatalf("%d events in the stream, want %d", n, senders*40+6)
	}
	r, err := h.db.RoomByID(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Extremities) != 1 {
		t.Fatalf("%d forward extremities after a last send, want 1", len(r.Extremities))
	}
	if ev, _ := h.rs.Event(ctx, last); ev == nil {
		t.Fatal("last event missing")
	}
}

// Rooms whose IDs are the hash of their create event (version 12) stay
// apart when one creator makes several alike within a millisecond: each
// create event gets a later timestamp than the last.
func TestRoomsCreatedAtOnceGetTheirOwnIDs(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice := "@alice:" + server
	seen := map[string]bool{}
	for range 20 {
		id, err := h.rs.CreateRoom(ctx, gomatrixserverlib.RoomVersionV12, alice, nil, []roomserver.NewEvent{member(alice, alice, "join")})
		if err != nil {
			t.Fatalf("room %d: %v", len(seen)+1, err)
		}
		if seen[id] {
			t.Fatalf("room ID %s handed out twice", id)
		}
		seen[id] = true
	}
}

// TestRememberedVerdictsFollowTheState: the auth rules' verdicts the
// roomserver remembers for a member's messages give way as soon as the
// state they depend on changes: the power to send, then membership;
// whether the messages come one at a time or together (built at once).
func TestRememberedVerdictsFollowTheState(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice, bob := "@alice:"+server, "@bob:"+server
	room := h.createRoom(gomatrixserverlib.RoomVersionV11, alice)
	h.send(room, member(alice, bob, "invite"))
	h.send(room, member(bob, bob, "join"))
	levels := func(eventsDefault int) roomserver.NewEvent {
		return roomserver.NewEvent{Sender: alice, Type: spec.MRoomPowerLevels, StateKey: sk(""),
			Content: js(map[string]any{"users": map[string]int{alice: 100}, "invite": 0, "events_default": eventsDefault})}
	}
	sends := func(phase string, allowed bool) {
		t.Helper()
		for _, n := range []int{1, 6} {
			errs := make(chan error, n)
			for i := range n {
				go func() {
					_, err := h.rs.Send(ctx, room, msg(bob, fmt.Sprintf("%s %d/%d", phase, i, n)))
					errs <- err
				}()
			}
			for range n {
				var fe *roomserver.ForbiddenError
				switch err := <-errs; {
				case allowed && err != nil:
					t.Fatalf("%s, %d at once: %v", phase, n, err)
				case !allowed && !errors.As(err, &fe):
					t.Fatalf("%s, %d at once: got %v, want ForbiddenError", phase, n, err)
				}
			}
		}
	}
	sends("joined", true)
	h.send(room, levels(50))
	sends("muted", false)
	h.send(room, levels(0))
	sends("unmuted", true)
	h.send(room, member(alice, bob, "leave"))
	sends("kicked", false)
}
