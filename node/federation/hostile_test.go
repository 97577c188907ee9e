package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
)

// forge builds an event on top of a room's current state at a, signed as
// server with key (which need not be server's own).
func forge(t *testing.T, a *node, roomID string, ne roomserver.NewEvent, server string, key ed25519.PrivateKey) gomatrixserverlib.PDU {
	t.Helper()
	proto, version, err := a.rs.MakeEvent(context.Background(), roomID, ne)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := gomatrixserverlib.MustGetRoomVersion(version).NewEventBuilderFromProtoEvent(proto).
		Build(time.Now(), spec.ServerName(server), "ed25519:p2p", key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

var txnSeq int

func sendTxn(t *testing.T, c fclient.FederationClient, origin, dest string, evs ...gomatrixserverlib.PDU) (fclient.RespSend, error) {
	t.Helper()
	txnSeq++
	txn := gomatrixserverlib.Transaction{
		TransactionID: gomatrixserverlib.TransactionID(fmt.Sprintf("hostile-%d", txnSeq)),
		Origin:        spec.ServerName(origin), Destination: spec.ServerName(dest),
		OriginServerTS: spec.AsTimestamp(time.Now()),
	}
	for _, e := range evs {
		txn.PDUs = append(txn.PDUs, e.JSON())
	}
	return c.SendTransaction(context.Background(), txn)
}

func httpCode(err error) (int, string) {
	var he gomatrix.HTTPError
	if errors.As(err, &he) {
		var re gomatrix.RespError
		errors.As(he.WrappedError, &re)
		return he.Code, re.ErrCode
	}
	return 0, ""
}

func TestHostilePeerIsRefused(t *testing.T) {
	ctx := context.Background()
	n := newNet()
	a, b, evil := newNode(t, n, "a.test"), newNode(t, n, "b.test"), newNode(t, n, "evil.test")
	alice, bob := a.user("alice"), b.user("bob")
	room := a.publicRoom(alice, "shared")
	b.join(room, bob, "a.test")
	evilClient := n.client("evil.test", evil.key, "evil.test")
	bobsClient := n.client("b.test", b.key, "b.test")
	plBefore := a.stateIDs(room)["m.room.power_levels|"]

	notStored := func(what string, ev gomatrixserverlib.PDU) {
		t.Helper()
		if _, err := a.rs.Event(ctx, ev.EventID()); !errors.Is(err, roomserver.ErrEventNotFound) {
			t.Errorf("%s: event is stored as valid (%v)", what, err)
		}
		if _, err := bobsClient.GetEvent(ctx, "b.test", "a.test", ev.EventID()); err == nil {
			t.Errorf("%s: A serves the event", what)
		}
	}
	refusedInTxn := func(what string, res fclient.RespSend, err error, ev gomatrixserverlib.PDU) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: transaction failed: %v", what, err)
		}
		if r, ok := res.PDUs[ev.EventID()]; !ok || r.Error == "" {
			t.Errorf("%s: accepted (%+v)", what, res.PDUs)
		}
		notStored(what, ev)
	}

	// 1. A forged signature: evil signs a message as b.test.
	forged := forge(t, a, room, msg(bob, "I am bob"), "b.test", evil.key)
	res, err := sendTxn(t, evilClient, "evil.test", "a.test", forged)
	refusedInTxn("forged signature", res, err, forged)

	// 2. A wrong origin: a request truly signed by b.test (evil replays
	// one, or holds the key) arriving over evil's connection.
	replay := n.client("b.test", b.key, "evil.test")
	legit := forge(t, a, room, msg(bob, "hello"), "b.test", b.key)
	if _, err := sendTxn(t, replay, "b.test", "a.test", legit); true {
		if code, errcode := httpCode(err); code != 403 || errcode != "M_FORBIDDEN" {
			t.Errorf("origin not the connected peer: got %d %s (%v)", code, errcode, err)
		}
	}
	notStored("wrong origin", legit)
	// ... and a request signed with the wrong key, over a connection the
	// transport does not vouch for, is not authenticated. (Over one it
	// authenticated as b.test, the key is b.test's: see peerVouched.)
	impostor := n.client("b.test", evil.key, "")
	if _, err := sendTxn(t, impostor, "b.test", "a.test", legit); true {
		if code, _ := httpCode(err); code != 401 {
			t.Errorf("bad X-Matrix signature: got %d (%v)", code, err)
		}
	}

	// 3. Bad auth: a properly signed message from someone never in the room.
	mallory := "@mallory:evil.test"
	intruder := forge(t, a, room, msg(mallory, "let me in"), "evil.test", evil.key)
	res, err = sendTxn(t, evilClient, "evil.test", "a.test", intruder)
	refusedInTxn("sender not in the room", res, err, intruder)

	// 4. An oversized transaction: 51 PDUs.
	var many []gomatrixserverlib.PDU
	for i := range 51 {
		many = append(many, forge(t, a, room, msg(bob, fmt.Sprintf("spam %d", i)), "b.test", b.key))
	}
	_, err = sendTxn(t, bobsClient, "b.test", "a.test", many...)
	if code, errcode := httpCode(err); code != 400 || errcode != "M_TOO_LARGE" {
		t.Errorf("51 PDUs: got %d %s (%v)", code, errcode, err)
	}
	for _, ev := range many[:3] {
		notStored("oversized transaction", ev)
	}

	// 5. A state reset: bob (power 0) makes himself admin.
	reset := forge(t, a, room, roomserver.NewEvent{Sender: bob, Type: spec.MRoomPowerLevels, StateKey: sk(""),
		Content: js(map[string]any{"users": map[string]int{bob: 100}})}, "b.test", b.key)
	res, err = sendTxn(t, bobsClient, "b.test", "a.test", reset)
	refusedInTxn("power level reset", res, err, reset)
	if pl := a.stateIDs(room)["m.room.power_levels|"]; pl != plBefore {
		t.Error("the state reset took effect")
	}

	// 6. A join for someone else's user, and an invite for a user who is
	// not the receiving server's.
	join := forge(t, a, room, member("@victim:b.test", "@victim:b.test", "join"), "evil.test", evil.key)
	if _, err := evilClient.SendJoin(ctx, "evil.test", "a.test", join); true {
		if code, _ := httpCode(err); code != 403 {
			t.Errorf("join for another server's user: got %d (%v)", code, err)
		}
	}
	notStored("foreign join", join)
	inv := forge(t, a, room, member(alice, "@carol:c.test", "invite"), "a.test", a.key)
	req, _ := fclient.NewInviteV2Request(inv, nil)
	if _, err := n.client("a.test", a.key, "a.test").SendInviteV2(ctx, "a.test", "b.test", req); true {
		if code, _ := httpCode(err); code != 403 {
			t.Errorf("invite for a user of another server: got %d (%v)", code, err)
		}
	}

	// Through it all the room still works.
	ok := b.send(room, msg(bob, "still fine"))
	a.mustWait(ok...)
}

func TestDuplicateTransactionGetsTheSameAnswer(t *testing.T) {
	n, a, b, _, bob, room := sharedRoom(t)
	c := n.client("b.test", b.key, "b.test")
	ev := forge(t, a, room, msg(bob, "once"), "b.test", b.key)
	txn := gomatrixserverlib.Transaction{TransactionID: "same", Origin: "b.test", Destination: "a.test",
		OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: []json.RawMessage{ev.JSON()}}
	r1, err := c.SendTransaction(context.Background(), txn)
	if err != nil {
		t.Fatal(err)
	}
	// Same ID, different contents: the first answer stands and the new
	// event is not processed.
	other := forge(t, a, room, msg(bob, "twice"), "b.test", b.key)
	txn.PDUs = []json.RawMessage{other.JSON()}
	r2, err := c.SendTransaction(context.Background(), txn)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r2.PDUs[ev.EventID()]; !ok || len(r1.PDUs) != len(r2.PDUs) {
		t.Fatalf("second answer %v differs from first %v", r2.PDUs, r1.PDUs)
	}
	if _, err := a.rs.Event(context.Background(), other.EventID()); err == nil {
		t.Fatal("a replayed transaction ID was processed again")
	}
}

// TestServerACL: a room's m.room.server_acl shuts a server out: its
// events are refused and it can neither join nor read the room's state.
func TestServerACL(t *testing.T) {
	ctx := context.Background()
	n := newNet()
	a, b, evil := newNode(t, n, "a.test"), newNode(t, n, "b.test"), newNode(t, n, "evil.test")
	alice, bob, mallory := a.user("alice"), b.user("bob"), evil.user("mallory")
	room := a.publicRoom(alice, "shared")
	b.join(room, bob, "a.test")
	evil.join(room, mallory, "a.test")
	before := forge(t, a, room, msg(mallory, "before the ACL"), "evil.test", evil.key)
	evilClient := n.client("evil.test", evil.key, "evil.test")
	if res, err := sendTxn(t, evilClient, "evil.test", "a.test", before); err != nil || res.PDUs[before.EventID()].Error != "" {
		t.Fatalf("before the ACL, evil's message was refused: %+v %v", res.PDUs, err)
	}

	acl := a.send(room, roomserver.NewEvent{Sender: alice, Type: "m.room.server_acl", StateKey: sk(""),
		Content: js(map[string]any{"allow": []string{"*"}, "deny": []string{"EVIL.test", "*.evil.test"}, "allow_ip_literals": false})})
	a.mustWait(acl...)

	after := forge(t, a, room, msg(mallory, "after the ACL"), "evil.test", evil.key)
	res, err := sendTxn(t, evilClient, "evil.test", "a.test", after)
	if err != nil || !strings.Contains(res.PDUs[after.EventID()].Error, "ACL") {
		t.Errorf("evil's message after the ACL: %+v %v", res.PDUs, err)
	}
	if _, err := a.rs.Event(ctx, after.EventID()); !errors.Is(err, roomserver.ErrEventNotFound) {
		t.Error("an ACL-denied event was stored")
	}
	if _, err := evilClient.LookupStateIDs(ctx, "evil.test", "a.test", room, acl[0]); true {
		if code, _ := httpCode(err); code != 403 {
			t.Errorf("state_ids for a denied server: got %d (%v)", code, err)
		}
	}
	if _, err := evilClient.MakeJoin(ctx, "evil.test", "a.test", room, "@other:evil.test"); true {
		if code, _ := httpCode(err); code != 403 {
			t.Errorf("make_join for a denied server: got %d (%v)", code, err)
		}
	}
	// Others carry on.
	ok := b.send(room, msg(bob, "still fine"))
	a.mustWait(ok...)
}

// A peer's transactions are handled one at a time: while one waits on the
// peer itself (events it refers to being fetched from it), the next waits
// its turn.
func TestOneTransactionAtATimePerOrigin(t *testing.T) {
	n := newNet()
	a := newNode(t, n, "a.test")
	room := a.publicRoom(a.user("alice"), "shared")
	pub, key, _ := ed25519.GenerateKey(nil)
	n.AddKey("slow.test", pub)
	asked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := n.Serve("slow.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(asked) })
		<-release
		http.NotFound(w, r)
	}))
	defer srv.Close()
	unblock := sync.OnceFunc(func() { close(release) })
	defer unblock() // before srv.Close, which waits for the handler

	state := a.stateIDs(room)
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: "@mallory:slow.test", RoomID: room, Type: "m.room.message", Content: spec.RawJSON(js(map[string]string{"body": "after a gap"})),
		PrevEvents: []string{"$not-sent-yet"}, Depth: 50,
		AuthEvents: []string{state["m.room.create|"], state["m.room.power_levels|"], "$mallorys-join-not-sent-yet"},
	}
	ev, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11).NewEventBuilderFromProtoEvent(&proto).
		Build(time.Now(), "slow.test", "ed25519:p2p", key)
	if err != nil {
		t.Fatal(err)
	}
	c := n.client("slow.test", key, "slow.test")
	first := make(chan error, 1)
	go func() {
		_, err := sendTxn(t, c, "slow.test", "a.test", ev)
		first <- err
	}()
	select { // the first transaction is fetching from slow.test
	case <-asked:
	case err := <-first:
		t.Fatalf("first transaction ended without asking for the missing events: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("slow.test was never asked for the missing events")
	}

	var released atomic.Bool
	second := make(chan error, 1)
	go func() {
		txn := gomatrixserverlib.Transaction{TransactionID: "second", Origin: "slow.test", Destination: "a.test",
			OriginServerTS: spec.AsTimestamp(time.Now())}
		_, err := c.SendTransaction(context.Background(), txn)
		if !released.Load() {
			err = errors.New("answered while the first transaction was still running")
		}
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("second transaction: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	released.Store(true)
	unblock()
	for _, ch := range []chan error{first, second} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
}
