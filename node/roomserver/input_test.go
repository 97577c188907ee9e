package roomserver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/internal/testnet"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

// outputs returns (and forgets) what a server's stream emitted.
func (h *harness) takeOutputs() []roomserver.Output {
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.outs
	h.outs = nil
	return o
}

// relay feeds every event from's stream emitted so far into to, as
// federation would, and fails the test on any refusal.
func relay(t testing.TB, from, to *harness) {
	t.Helper()
	mustAccept(t, to.rs.Input(context.Background(), from.outputsAsInput()))
}

// outputsAsInput is what h's stream emitted so far, as another server's
// input.
func (h *harness) outputsAsInput() []roomserver.InputEvent {
	var in []roomserver.InputEvent
	for _, o := range h.takeOutputs() {
		in = append(in, roomserver.InputEvent{Origin: h.name, RoomVersion: o.Event.Version(), JSON: o.Event.JSON()})
	}
	return in
}

// mustAccept fails the test on any refused or soft-failed event.
func mustAccept(t testing.TB, results []roomserver.InputResult) {
	t.Helper()
	for _, r := range results {
		if r.Err != nil || r.SoftFailed {
			t.Fatalf("input %s: %+v", r.EventID, r)
		}
	}
}

// build signs an event of h's by hand, with chosen prev events and time,
// to make forks a single roomserver never would.
func (h *harness) build(t *testing.T, roomID string, ne roomserver.NewEvent, prev []string, depth int64, auth []string, ts time.Time) gomatrixserverlib.PDU {
	t.Helper()
	ver, err := h.rs.RoomVersion(context.Background(), roomID)
	if err != nil {
		ver = gomatrixserverlib.RoomVersionV11 // a server outside the room
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: ne.Sender, RoomID: roomID, Type: ne.Type, StateKey: ne.StateKey,
		Content: spec.RawJSON(ne.Content), PrevEvents: prev, AuthEvents: auth, Depth: depth,
	}
	ev, err := gomatrixserverlib.MustGetRoomVersion(ver).NewEventBuilderFromProtoEvent(&proto).
		Build(ts, spec.ServerName(h.name), "ed25519:p2p", h.key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// publicRoom has @alice:a.test make a public room (version 11) that
// @bob:b.test joins, each server holding all of it.
func publicRoom(t testing.TB, keys *testnet.Net) (a, b *harness, room string) {
	t.Helper()
	a, b = newServer(t, "a.test", keys), newServer(t, "b.test", keys)
	alice, bob := "@alice:a.test", "@bob:b.test"
	room = a.createRoom(gomatrixserverlib.RoomVersionV11, alice)
	a.send(room, roomserver.NewEvent{Sender: alice, Type: spec.MRoomJoinRules, StateKey: sk(""), Content: js(map[string]string{"join_rule": "public"})})
	relay(t, a, b)
	b.send(room, member(bob, bob, "join"))
	relay(t, b, a)
	b.takeOutputs()
	return a, b, room
}

// extremities are a room's forward extremities on h and its depth.
func (h *harness) extremities(t testing.TB, roomID string) ([]string, int64) {
	t.Helper()
	r, err := h.db.RoomByID(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := h.db.EventsByNID(context.Background(), r.Extremities)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	return ids, r.Depth
}

func input(h *harness, origin string, evs ...gomatrixserverlib.PDU) []roomserver.InputResult {
	in := make([]roomserver.InputEvent, len(evs))
	for i, ev := range evs {
		in[i] = roomserver.InputEvent{Origin: origin, JSON: ev.JSON()}
	}
	return h.rs.Input(context.Background(), in)
}

func TestFederatedRoomForksAndResolves(t *testing.T) {
	// Version 12 is left out: see roomserver.UnstableVersions.
	for _, v := range roomserver.StableVersions {
		t.Run("v"+string(v), func(t *testing.T) { testForks(t, v) })
	}
}

func testForks(t *testing.T, version gomatrixserverlib.RoomVersion) {
	ctx := context.Background()
	keys := testnet.New()
	a := newServer(t, "a.test", keys)
	b := newServer(t, "b.test", keys)
	alice, bob := "@alice:a.test", "@bob:b.test"

	// Bob's server creates a public room; A learns it event by event.
	room := b.createRoom(version, bob)
	b.send(room, roomserver.NewEvent{Sender: bob, Type: spec.MRoomJoinRules, StateKey: sk(""), Content: js(map[string]string{"join_rule": "public"})})
	relay(t, b, a)
	// Alice joins on A; B learns it.
	a.send(room, member(alice, alice, "join"))
	relay(t, a, b)
	if m, _ := b.rs.Membership(ctx, room, alice); m != "join" {
		t.Fatalf("B sees alice as %q", m)
	}

	// Two topic changes by Bob on top of the same event: a fork.
	st, _ := a.rs.CurrentState(ctx, room)
	var prev string
	var depth int64
	for _, e := range st {
		if e.Type() == spec.MRoomMember && *e.StateKey() == alice {
			prev, depth = e.EventID(), e.Depth()
		}
	}
	auth := func() []string {
		var ids []string
		for _, e := range st {
			switch {
			case e.Type() == spec.MRoomPowerLevels,
				e.Type() == spec.MRoomMember && *e.StateKey() == bob,
				e.Type() == spec.MRoomCreate && version != gomatrixserverlib.RoomVersionV12:
				ids = append(ids, e.EventID())
			}
		}
		return ids
	}()
	t0 := time.Now()
	x := b.build(t, room, roomserver.NewEvent{Sender: bob, Type: "m.room.topic", StateKey: sk(""), Content: js(map[string]string{"topic": "earlier"})}, []string{prev}, depth+1, auth, t0)
	y := b.build(t, room, roomserver.NewEvent{Sender: bob, Type: "m.room.topic", StateKey: sk(""), Content: js(map[string]string{"topic": "later"})}, []string{prev}, depth+1, auth, t0.Add(time.Second))
	for _, r := range input(a, "b.test", y, x) {
		if r.Err != nil || r.SoftFailed {
			t.Fatalf("fork event %s: %+v", r.EventID, r)
		}
	}
	// A's next event merges both branches, and the resolved state holds
	// the later topic whatever order the branches arrived in.
	merge := a.send(room, msg(alice, "merge"))[0]
	ev, _ := a.rs.Event(ctx, merge)
	if len(ev.PrevEventIDs()) != 2 {
		t.Fatalf("merge event has prev_events %v, want both branches", ev.PrevEventIDs())
	}
	topic, _ := a.rs.StateEvent(ctx, room, "m.room.topic", "")
	if topic == nil || topic.EventID() != y.EventID() {
		t.Fatalf("resolved topic is %v, want the later one %s", topic, y.EventID())
	}
	// The state survives a restart (read back from snapshots).
	a.reopen()
	if topic, _ := a.rs.StateEvent(ctx, room, "m.room.topic", ""); topic == nil || topic.EventID() != y.EventID() {
		t.Fatal("resolved topic lost on restart")
	}
	after, err := a.rs.StateAfter(ctx, merge)
	if err != nil || len(after) == 0 {
		t.Fatalf("state after merge: %v", err)
	}
}

func TestHostileInput(t *testing.T) {
	ctx := context.Background()
	keys := testnet.New()
	a, b, room := publicRoom(t, keys)
	evil := newServer(t, "evil.test", keys)
	bob := "@bob:b.test"

	st, _ := a.rs.CurrentState(ctx, room)
	authFor := func(sender string) []string {
		var ids []string
		for _, e := range st {
			if e.Type() == spec.MRoomCreate || e.Type() == spec.MRoomPowerLevels ||
				e.Type() == spec.MRoomMember && *e.StateKey() == sender {
				ids = append(ids, e.EventID())
			}
		}
		return ids
	}
	prev, depth := a.extremities(t, room)

	// Forged: evil.test signs an event claiming to be from bob on b.test.
	forged := evil.build(t, room, msg(bob, "I am bob"), prev, depth+1, authFor(bob), time.Now())
	// Bad auth: a properly signed message from a user who never joined.
	mallory := "@mallory:evil.test"
	notMember := evil.build(t, room, msg(mallory, "let me in"), prev, depth+1, authFor(mallory), time.Now())
	// State reset: bob (power 0) makes himself admin.
	reset := b.build(t, room, roomserver.NewEvent{Sender: bob, Type: spec.MRoomPowerLevels, StateKey: sk(""),
		Content: js(map[string]any{"users": map[string]int{bob: 100}})}, prev, depth+1, authFor(bob), time.Now())
	// Tampered: content changed after signing.
	tampered := []byte(string(b.build(t, room, msg(bob, "original"), prev, depth+1, authFor(bob), time.Now()).JSON()))
	tampered = []byte(replaceOnce(string(tampered), "original", "tampered"))

	res := a.rs.Input(ctx, []roomserver.InputEvent{
		{Origin: "evil.test", JSON: forged.JSON()},
		{Origin: "evil.test", JSON: notMember.JSON()},
		{Origin: "b.test", JSON: reset.JSON()},
		{Origin: "b.test", JSON: tampered},
		{Origin: "b.test", JSON: []byte(`{"room_id":"` + room + `","type":`)},
	})
	var bad *roomserver.BadEventError
	var rej *roomserver.RejectedError
	if !errors.As(res[0].Err, &bad) {
		t.Errorf("forged signature: %+v", res[0])
	}
	if !errors.As(res[1].Err, &rej) {
		t.Errorf("non-member message: %+v", res[1])
	}
	if !errors.As(res[2].Err, &rej) {
		t.Errorf("power level reset: %+v", res[2])
	}
	if res[3].Err != nil {
		t.Errorf("tampered content should be accepted redacted: %+v", res[3])
	}
	if !errors.As(res[4].Err, &bad) {
		t.Errorf("truncated JSON: %+v", res[4])
	}
	for _, ev := range []gomatrixserverlib.PDU{forged, notMember, reset} {
		if _, err := a.rs.Event(ctx, ev.EventID()); !errors.Is(err, roomserver.ErrEventNotFound) {
			t.Errorf("invalid event %s is served: %v", ev.EventID(), err)
		}
	}
	if pl, _ := a.rs.StateEvent(ctx, room, spec.MRoomPowerLevels, ""); pl.EventID() == reset.EventID() {
		t.Error("state reset took effect")
	}
	if got, _ := a.rs.Event(ctx, res[3].EventID); got == nil || !got.Redacted() {
		t.Error("tampered event not stored redacted")
	}
}

func replaceOnce(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	return s
}

func TestInputLogRedeliveredAfterCrash(t *testing.T) {
	ctx := context.Background()
	keys := testnet.New()
	a := newServer(t, "a.test", keys)
	b := newServer(t, "b.test", keys)
	room := b.createRoom(gomatrixserverlib.RoomVersionV12, "@bob:b.test")
	outs := b.takeOutputs()

	// The events reached A's input log, then A died before processing.
	a.close()
	db, err := storage.Open(storage.Options{Path: a.path})
	if err != nil {
		t.Fatal(err)
	}
	db.MigrateRooms()
	err = db.Write(ctx, func(tx *storage.Tx) error {
		for _, o := range outs {
			if _, err := storage.AppendInputLog(tx, storage.LoggedInput{RoomID: o.RoomID, Version: string(o.Event.Version()), JSON: o.Event.JSON()}); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	a.open()
	if err := a.rs.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := a.rs.CurrentState(ctx, room)
	if err != nil || len(st) != 5 {
		t.Fatalf("after redelivery A has %d state events (%v), want 5", len(st), err)
	}
	if left, _ := a.db.InputLog(ctx); len(left) != 0 {
		t.Fatalf("%d events left in the input log", len(left))
	}
}

// TestEventsWaitingForABusyRoomAreLogged: an event for a room whose
// worker is busy waits in the durable input log (a crash then loses
// nothing); once stored it leaves the log. An event for a free room is
// stored at once.
func TestEventsWaitingForABusyRoomAreLogged(t *testing.T) {
	ctx := context.Background()
	a, b, room := publicRoom(t, testnet.New())
	bob := "@bob:b.test"

	b.send(room, msg(bob, "to a free room"))
	relay(t, b, a)
	if left, _ := a.db.InputLog(ctx); len(left) != 0 {
		t.Fatalf("%d events left in the input log", len(left))
	}

	release, err := a.rs.Hold(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	b.send(room, msg(bob, "to a busy room"))
	in := b.outputsAsInput()
	done := make(chan []roomserver.InputResult)
	go func() { done <- a.rs.Input(ctx, in) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		logged, err := a.db.InputLog(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(logged) == 1 {
			break
		}
		if time.Now().After(deadline) {
			release()
			t.Fatalf("the event for the busy room is not in the input log (%d entries)", len(logged))
		}
		time.Sleep(5 * time.Millisecond)
	}
	release()
	mustAccept(t, <-done)
	if left, _ := a.db.InputLog(ctx); len(left) != 0 {
		t.Fatalf("%d events left in the input log once stored", len(left))
	}
	ids, _ := a.extremities(t, room)
	bids, _ := b.extremities(t, room)
	if len(ids) != 1 || ids[0] != bids[0] {
		t.Fatalf("A's extremities %v, B's %v", ids, bids)
	}
}

// TestAuthVerdictsFollowTheAuthEvents: a message allowed once is allowed
// again by the same auth events, but the same sender's message citing a
// power levels event that forbids it is refused.
func TestAuthVerdictsFollowTheAuthEvents(t *testing.T) {
	ctx := context.Background()
	keys := testnet.New()
	a, b, room := publicRoom(t, keys)
	alice, bob := "@alice:a.test", "@bob:b.test"
	b.send(room, msg(bob, "allowed"), msg(bob, "allowed again"))
	relay(t, b, a) // the second is judged as the first was

	// Alice raises the level messages need above bob's.
	a.send(room, roomserver.NewEvent{Sender: alice, Type: spec.MRoomPowerLevels, StateKey: sk(""),
		Content: js(map[string]any{"users": map[string]int{alice: 100}, "events_default": 50})})
	relay(t, a, b)
	st, _ := a.rs.CurrentState(ctx, room)
	var auth []string
	for _, e := range st {
		if e.Type() == spec.MRoomCreate || e.Type() == spec.MRoomPowerLevels || e.Type() == spec.MRoomMember && *e.StateKey() == bob {
			auth = append(auth, e.EventID())
		}
	}
	prev, depth := a.extremities(t, room)
	muted := b.build(t, room, msg(bob, "muted"), prev, depth+1, auth, time.Now())
	res := input(a, "b.test", muted)
	var rej *roomserver.RejectedError
	if !errors.As(res[0].Err, &rej) {
		t.Fatalf("a message its own auth events forbid: %+v", res[0])
	}
}

// TestEventsSeenBeforeAreKnown: an event received again is known for what
// it was (stored, or rejected), whether the room remembers its row from
// storing it or reads it back after a restart; and a message built on
// one the room stored is input without a refusal.
func TestEventsSeenBeforeAreKnown(t *testing.T) {
	ctx := context.Background()
	keys := testnet.New()
	a, b, room := publicRoom(t, keys)
	bob, mallory := "@bob:b.test", "@mallory:b.test"

	b.send(room, msg(bob, "first"))
	first := b.outputsAsInput()
	mustAccept(t, a.rs.Input(ctx, first))
	b.send(room, msg(bob, "second")) // its prev event: the first
	second := b.outputsAsInput()
	mustAccept(t, a.rs.Input(ctx, second))
	a.takeOutputs()

	// Not a member: rejected by its auth events, and stored as rejected.
	prev, depth := a.extremities(t, room)
	st, _ := a.rs.CurrentState(ctx, room)
	var auth []string
	for _, e := range st {
		if e.Type() == spec.MRoomCreate || e.Type() == spec.MRoomPowerLevels {
			auth = append(auth, e.EventID())
		}
	}
	intruder := b.build(t, room, msg(mallory, "hi"), prev, depth+1, auth, time.Now())
	var rej *roomserver.RejectedError
	if res := input(a, "b.test", intruder); !errors.As(res[0].Err, &rej) {
		t.Fatalf("a non-member's message: %+v", res[0])
	}

	check := func(when string) {
		t.Helper()
		for _, in := range [][]roomserver.InputEvent{first, second} {
			res := a.rs.Input(ctx, in)
			if len(res) != 1 || res[0].Err != nil || res[0].SoftFailed {
				t.Errorf("%s: a stored event received again: %+v", when, res)
			}
		}
		if res := input(a, "b.test", intruder); !errors.As(res[0].Err, &rej) || rej.Reason != "previously rejected" {
			t.Errorf("%s: a rejected event received again: %+v", when, res[0])
		}
		if outs := a.takeOutputs(); len(outs) != 0 {
			t.Errorf("%s: events received again were emitted again: %d outputs", when, len(outs))
		}
	}
	check("remembered")
	a.reopen()
	check("after a restart")

	b.send(room, msg(bob, "third"))
	mustAccept(t, a.rs.Input(ctx, b.outputsAsInput()))
	if outs := a.takeOutputs(); len(outs) != 1 {
		t.Errorf("a new message after all that: %d outputs, want 1", len(outs))
	}
}
