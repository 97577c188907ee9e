package federation_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
)

func TestJoinAndMessagesAcrossThreeServers(t *testing.T) {
	ctx := context.Background()
	n := newNet()
	a, b, c := newNode(t, n, "a.test"), newNode(t, n, "b.test"), newNode(t, n, "c.test")
	alice, bob, carol := a.user("alice"), b.user("bob"), c.user("carol")

	room := a.publicRoom(alice, "shared")
	if err := a.db.CreateRoomAlias(ctx, "#lobby:a.test", room, alice); err != nil {
		t.Fatal(err)
	}
	before := a.send(room, msg(alice, "before anyone came"))

	// Bob joins by room ID through a.test; Carol by alias, with no hint.
	b.join(room, bob, "a.test")
	if got, err := c.fed.PerformJoin(ctx, "#lobby:a.test", carol, nil); err != nil || got != room {
		t.Fatalf("join by alias: %q, %v", got, err)
	}

	// Everyone ends up with the same state, and B heard of Carol's join
	// from A, the resident server that handled it.
	carolJoin := c.stateIDs(room)["m.room.member|"+carol]
	b.mustWait(carolJoin)
	if m, _ := b.rs.Membership(ctx, room, carol); m != "join" {
		t.Fatalf("B sees carol as %q", m)
	}

	// Messages flow every way through the queues.
	fromA := a.send(room, msg(alice, "hello from a"))[0]
	fromB := b.send(room, msg(bob, "hello from b"))[0]
	fromC := c.send(room, msg(carol, "hello from c"))[0]
	for _, nd := range []*node{a, b, c} {
		nd.mustWait(fromA, fromB, fromC)
	}
	sa, sb, sc := a.stateIDs(room), b.stateIDs(room), c.stateIDs(room)
	if !maps.Equal(sa, sb) || !maps.Equal(sa, sc) {
		t.Fatalf("state differs:\nA %v\nB %v\nC %v", sa, sb, sc)
	}
	if len(sa) != 7 { // create, PL, join rules, visibility, 3 members
		t.Fatalf("state has %d events, want 7", len(sa))
	}
	// B can fetch history it joined after (shared visibility) from A.
	if _, err := b.fed.Client().GetEvent(ctx, "b.test", "a.test", before[0]); err != nil {
		t.Fatalf("B cannot fetch older history: %v", err)
	}

	// A message sent by B arrives at C from B directly, in order.
	var ids []string
	for i := range 20 {
		ids = append(ids, b.send(room, msg(bob, fmt.Sprintf("burst %d", i)))...)
	}
	c.mustWait(ids...)
	for i := 1; i < len(ids); i++ {
		if c.streamPos(ids[i-1]) >= c.streamPos(ids[i]) {
			t.Fatalf("C got burst %d before %d", i, i-1)
		}
	}
}

func TestRemoteInviteAndReject(t *testing.T) {
	ctx := context.Background()
	n := newNet()
	a, b := newNode(t, n, "a.test"), newNode(t, n, "b.test")
	alice, bob, dave := a.user("alice"), b.user("bob"), b.user("dave")
	id, err := a.rs.CreateRoom(ctx, "", alice, nil, []roomserver.NewEvent{
		member(alice, alice, "join"),
		{Sender: alice, Type: spec.MRoomPowerLevels, StateKey: sk(""), Content: js(map[string]any{"users": map[string]int{alice: 100}})},
		{Sender: alice, Type: spec.MRoomJoinRules, StateKey: sk(""), Content: js(map[string]string{"join_rule": "invite"})},
		{Sender: alice, Type: spec.MRoomName, StateKey: sk(""), Content: js(map[string]string{"name": "Secret"})},
	})
	if err != nil {
		t.Fatal(err)
	}

	// Uninvited, Bob cannot get in.
	if _, err := b.fed.PerformJoin(ctx, id, bob, []string{"a.test"}); err == nil {
		t.Fatal("joined an invite-only room uninvited")
	}
	// Invited, his server records the invite (with the room's name for
	// his client) and he joins without naming a server.
	if err := a.fed.PerformInvite(ctx, id, alice, bob); err != nil {
		t.Fatal(err)
	}
	if m, err := b.rs.Membership(ctx, id, bob); err != nil || m != "invite" {
		t.Fatalf("bob's membership on B: %q, %v", m, err)
	}
	if m, _ := a.rs.Membership(ctx, id, bob); m != "invite" {
		t.Fatalf("bob's membership on A: %q", m)
	}
	// The invite entered B's stream (sync wakes for it), carrying the
	// stripped state Bob's client shows.
	invite := a.stateIDs(id)["m.room.member|"+bob]
	b.mustWait(invite)
	ev, err := b.rs.Event(ctx, invite)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ev.Unsigned()), `"invite_room_state"`) || !strings.Contains(string(ev.Unsigned()), "Secret") {
		t.Fatalf("stored invite has unsigned %s", ev.Unsigned())
	}
	if _, err := b.fed.PerformJoin(ctx, id, bob, nil); err != nil {
		t.Fatalf("join after invite: %v", err)
	}
	if m, _ := a.rs.Membership(ctx, id, bob); m != "join" {
		t.Fatalf("after the join A sees bob as %q", m)
	}

	// Dave, also on B, is invited to a second room and declines.
	room2 := a.publicRoom(alice, "joined")
	a.send(room2, roomserver.NewEvent{Sender: alice, Type: spec.MRoomJoinRules, StateKey: sk(""), Content: js(map[string]string{"join_rule": "invite"})})
	if err := a.fed.PerformInvite(ctx, room2, alice, dave); err != nil {
		t.Fatal(err)
	}
	if err := b.fed.PerformLeave(ctx, room2, dave, nil); err != nil {
		t.Fatalf("reject invite: %v", err)
	}
	if m, _ := a.rs.Membership(ctx, room2, dave); m != "leave" {
		t.Fatalf("A sees dave as %q after he declined", m)
	}
	if m, _ := b.rs.Membership(ctx, room2, dave); m != "leave" {
		t.Fatalf("B sees dave as %q after he declined", m)
	}
}

func TestOfflineServerCatchesUpFromPersistentQueue(t *testing.T) {
	_, a, b, alice, bob, room := sharedRoom(t)

	b.stop()
	var ids []string
	for i := range 200 {
		ids = append(ids, a.send(room, msg(alice, fmt.Sprintf("while you were away %d", i)))...)
	}
	// A restarts too: what it queued for B is on disk, not in memory.
	a.restart()
	b.start()
	b.mustWait(ids...)
	for i := 1; i < len(ids); i++ {
		if b.streamPos(ids[i-1]) >= b.streamPos(ids[i]) {
			t.Fatalf("B got message %d before %d", i, i-1)
		}
	}
	// And the queue drains: B's messages reach A again right away.
	back := b.send(room, msg(bob, "I'm back"))
	a.mustWait(back...)
}

// TestCrashDuringAFirstSendLosesNothing: an event goes to an idle
// server at once, straight from the stream, without being queued. If this
// server dies while that send hangs, a copy of its files taken then (what
// a crash leaves) still delivers the event once restarted.
func TestCrashDuringAFirstSendLosesNothing(t *testing.T) {
	n, a, b, alice, _, room := sharedRoom(t)

	// B's address now answers nothing: A's send to it hangs.
	b.stop()
	arrived := make(chan []byte, 8)
	release := make(chan struct{})
	hang := n.Serve("b.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		arrived <- body
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	ids := a.send(room, msg(alice, "sent into the void"))
	select {
	case body := <-arrived:
		if !strings.Contains(string(body), "sent into the void") {
			t.Fatalf("A's first send carried %s, not the message", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A never sent the message")
	}
	// Past the fan-out's lazy save of its cursor, then "crash": copy A's
	// files as they are now, and run A on the copy.
	time.Sleep(1500 * time.Millisecond)
	crashed := filepath.Join(t.TempDir(), "hearth.db")
	for _, suffix := range []string{"-wal", ""} {
		if data, err := os.ReadFile(a.path + suffix); err == nil {
			if err := os.WriteFile(crashed+suffix, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(release)
	hang.Close()
	a.stop()
	a.path = crashed
	a.start()
	b.start()
	b.mustWait(ids...)
}

func TestGapsAreFilledFromTheSender(t *testing.T) {
	ctx := context.Background()
	n, a, b, alice, bob, room := sharedRoom(t)

	// B is unreachable while A sends; then A's queue for B loses all but
	// the newest event (as a full queue would): B must fetch the rest.
	gap := func(count int) []string {
		n.SetDown("b.test", true)
		var ids []string
		for i := range count {
			ids = append(ids, a.send(room, msg(alice, fmt.Sprintf("gap %d", i)))...)
		}
		if _, err := a.db.TrimPDUQueue(ctx, "b.test", 1); err != nil {
			t.Fatal(err)
		}
		n.SetDown("b.test", false)
		a.fed.PeerOnline("b.test")
		return ids
	}

	// A small gap: /get_missing_events brings every event.
	ids := gap(10)
	b.mustWait(ids...)
	for _, id := range ids {
		if _, err := b.rs.Event(ctx, id); err != nil {
			t.Fatalf("event %s missing on B: %v", id, err)
		}
	}

	// A gap wider than get_missing_events reaches: B takes the state at
	// the oldest event it got and carries on; the older part is left to
	// backfill.
	topic := a.send(room, roomserver.NewEvent{Sender: alice, Type: "m.room.topic", StateKey: sk(""), Content: js(map[string]string{"topic": "new"})})
	ids = gap(150)
	b.mustWait(ids[len(ids)-1])
	if !maps.Equal(a.stateIDs(room), b.stateIDs(room)) {
		t.Fatal("state differs after a wide gap")
	}
	if got := b.stateIDs(room)["m.room.topic|"]; got != topic[0] {
		t.Fatalf("B's topic is %q, want %q", got, topic[0])
	}
	after := b.send(room, msg(bob, "and on we go"))
	a.mustWait(after...)
}

func TestBackfillAndGetMissingEventsServing(t *testing.T) {
	ctx := context.Background()
	n := newNet()
	a, b := newNode(t, n, "a.test"), newNode(t, n, "b.test")
	alice, bob := a.user("alice"), b.user("bob")
	room := a.publicRoom(alice, "joined")
	var secret []string
	for i := range 5 {
		secret = append(secret, a.send(room, msg(alice, fmt.Sprintf("secret %d", i)))...)
	}
	b.join(room, bob, "a.test")
	var open []string
	for i := range 30 {
		open = append(open, a.send(room, msg(alice, fmt.Sprintf("open %d", i)))...)
	}
	b.mustWait(open...)
	client := b.fed.Client()
	latest := open[len(open)-1]

	// The first ten: newest first, each once, each the prev of the one before.
	txn, err := client.Backfill(ctx, "b.test", "a.test", room, 10, []string{latest})
	if err != nil {
		t.Fatal(err)
	}
	evs := parse(t, txn.PDUs)
	if len(evs) != 10 || evs[0].EventID() != latest {
		t.Fatalf("backfill gave %d events starting %s", len(evs), evs[0].EventID())
	}
	for i := 1; i < len(evs); i++ {
		if evs[i-1].PrevEventIDs()[0] != evs[i].EventID() {
			t.Fatalf("event %d is not the prev of event %d", i, i-1)
		}
	}

	// All of it: back to the create event, nothing twice; what B may not
	// see (sent before Bob joined a "joined" room) comes redacted.
	txn, err = client.Backfill(ctx, "b.test", "a.test", room, 1000, []string{latest})
	if err != nil {
		t.Fatal(err)
	}
	evs = parse(t, txn.PDUs)
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.EventID()] {
			t.Fatalf("%s served twice", e.EventID())
		}
		seen[e.EventID()] = true
	}
	// create, 4 initial state, 5 secret, bob's join, 30 open
	if want := 5 + 5 + 1 + 30; len(evs) != want {
		t.Fatalf("backfill gave %d events, want %d", len(evs), want)
	}
	if last := evs[len(evs)-1]; last.Type() != spec.MRoomCreate {
		t.Fatalf("backfill ends with %s, not the create event", last.Type())
	}
	for _, e := range evs {
		body := string(e.Content())
		switch {
		case contains(secret, e.EventID()) && body != "{}":
			t.Fatalf("event from before the join served unredacted: %s", body)
		case contains(open, e.EventID()) && body == "{}":
			t.Fatalf("visible event served redacted")
		}
	}

	// get_missing_events: between open[9] and open[20], oldest first.
	got, err := client.LookupMissingEvents(ctx, "b.test", "a.test", room, fclientMissing([]string{open[9]}, []string{open[20]}, 5), "")
	if err != nil {
		t.Fatal(err)
	}
	mevs := parse(t, got.Events)
	if len(mevs) != 5 || mevs[0].EventID() != open[15] || mevs[4].EventID() != open[19] {
		t.Fatalf("get_missing_events gave %v", ids(mevs))
	}
	got, err = client.LookupMissingEvents(ctx, "b.test", "a.test", room, fclientMissing([]string{open[9]}, []string{open[20]}, 100), "")
	if err != nil {
		t.Fatal(err)
	}
	if mevs = parse(t, got.Events); len(mevs) != 10 || mevs[0].EventID() != open[10] {
		t.Fatalf("get_missing_events stopped at earliest wrongly: %v", ids(mevs))
	}

	// A server with nobody in the room gets nothing.
	c := newNode(t, n, "c.test")
	if _, err := c.fed.Client().Backfill(ctx, "c.test", "a.test", room, 10, []string{latest}); err == nil {
		t.Fatal("a server outside the room could backfill")
	}
	if _, err := c.fed.Client().GetEvent(ctx, "c.test", "a.test", open[0]); err == nil {
		t.Fatal("a server outside a joined-only room could fetch an event")
	}
}

func parse[T ~[]byte](t *testing.T, raws []T) []gomatrixserverlib.PDU {
	t.Helper()
	var out []gomatrixserverlib.PDU
	for _, r := range raws {
		p, err := gomatrixserverlib.MustGetRoomVersion(roomserver.StableVersions[0]).NewEventFromUntrustedJSON([]byte(r))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func fclientMissing(earliest, latest []string, limit int) fclient.MissingEvents {
	return fclient.MissingEvents{EarliestEvents: earliest, LatestEvents: latest, Limit: limit}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func ids(evs []gomatrixserverlib.PDU) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.EventID())
	}
	return out
}

func TestJoinRoomVersion12(t *testing.T) {
	ctx := context.Background()
	n := newNet()
	a, b := newNode(t, n, "a.test"), newNode(t, n, "b.test")
	alice, bob := a.user("alice"), b.user("bob")
	room, err := a.rs.CreateRoom(ctx, gomatrixserverlib.RoomVersionV12, alice, nil, []roomserver.NewEvent{
		member(alice, alice, "join"),
		{Sender: alice, Type: spec.MRoomJoinRules, StateKey: sk(""), Content: js(map[string]string{"join_rule": "public"})},
	})
	if err != nil {
		t.Fatal(err)
	}
	// A version 12 room ID names no server: the join needs a via.
	if _, err := b.fed.PerformJoin(ctx, room, bob, nil); err == nil {
		t.Fatal("joined with no server to ask")
	}
	b.join(room, bob, "a.test")
	x := a.send(room, msg(alice, "v12 from a"))
	y := b.send(room, msg(bob, "v12 from b"))
	b.mustWait(x...)
	a.mustWait(y...)
	if !maps.Equal(a.stateIDs(room), b.stateIDs(room)) {
		t.Fatal("state differs")
	}
}

// An event sent by a server that had not yet heard of a join goes only
// to the servers it knew; the joiner gets it once the sender hears of the
// join, without any later event pointing at it.
func TestEventSentDuringAJoinReachesTheJoiner(t *testing.T) {
	ctx := context.Background()
	n := newNet()
	a, b, c := newNode(t, n, "a.test"), newNode(t, n, "b.test"), newNode(t, n, "c.test")
	alice, bob, carol := a.user("alice"), b.user("bob"), c.user("carol")
	room := a.publicRoom(alice, "shared")
	b.join(room, bob, "a.test")

	// B is unreachable while Carol joins through A, so B does not know of
	// her when Bob speaks: his message goes to A alone.
	n.SetDown("b.test", true)
	c.join(room, carol, "a.test")
	if m, _ := b.rs.Membership(ctx, room, carol); m == "join" {
		t.Fatal("B heard of Carol's join while unreachable")
	}
	unseen := b.send(room, msg(bob, "said before B knew of Carol"))
	a.mustWait(unseen...)

	n.SetDown("b.test", false)
	c.mustWait(unseen...)
}
