package federation_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
)

// forgeOn builds an event with the given prev events and depth, its auth
// events from the room's current state at a, signed as server with key.
func forgeOn(t *testing.T, a *node, roomID string, ne roomserver.NewEvent, server string, key ed25519.PrivateKey, prevs []string, depth int64) gomatrixserverlib.PDU {
	t.Helper()
	proto, version, err := a.rs.MakeEvent(context.Background(), roomID, ne)
	if err != nil {
		t.Fatal(err)
	}
	proto.PrevEvents, proto.Depth = prevs, depth
	ev, err := gomatrixserverlib.MustGetRoomVersion(version).NewEventBuilderFromProtoEvent(proto).
		Build(time.Now(), spec.ServerName(server), "ed25519:p2p", key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestBackfillWalksAWideFork: /backfill over a history with a fork wider
// than what one read of the database ahead covers (30 siblings, a merge
// naming 20 of them): the serving side visits the events the spec's walk
// visits (reachable from the given events over prev_events, deepest
// first, each once, up to the limit) and no others, whatever the limit.
func TestBackfillWalksAWideFork(t *testing.T) {
	ctx := context.Background()
	n := newNet()
	a, b := newNode(t, n, "a.test"), newNode(t, n, "b.test")
	alice, bob := a.user("alice"), b.user("bob")
	room := a.publicRoom(alice, "shared")
	b.join(room, bob, "a.test")
	var base []string
	for i := range 40 {
		base = append(base, a.send(room, msg(alice, fmt.Sprint("before ", i)))...)
	}
	root, err := a.rs.Event(ctx, base[len(base)-1])
	if err != nil {
		t.Fatal(err)
	}
	bobs := n.client("b.test", b.key, "b.test")
	var siblings []gomatrixserverlib.PDU
	for i := range 30 {
		siblings = append(siblings, forgeOn(t, a, room, msg(bob, fmt.Sprint("sibling ", i)), "b.test", b.key, []string{root.EventID()}, root.Depth()+1))
	}
	var named []string
	for _, s := range siblings[:20] {
		named = append(named, s.EventID())
	}
	merge := forgeOn(t, a, room, msg(bob, "merge"), "b.test", b.key, named, root.Depth()+2)
	if _, err := sendTxn(t, bobs, "b.test", "a.test", append(siblings, merge)...); err != nil {
		t.Fatal(err)
	}
	a.mustWait(merge.EventID())
	after := a.send(room, msg(alice, "after"))

	// The reference: every event reachable from start, with its depth.
	reachable := func(start string) map[string]int64 {
		out := map[string]int64{}
		queue := []string{start}
		for len(queue) > 0 {
			id := queue[0]
			queue = queue[1:]
			if _, ok := out[id]; ok {
				continue
			}
			ev, err := a.rs.Event(ctx, id)
			if err != nil {
				continue
			}
			out[id] = ev.Depth()
			queue = append(queue, ev.PrevEventIDs()...)
		}
		return out
	}
	for _, start := range []string{merge.EventID(), after[0]} {
		all := reachable(start)
		for _, limit := range []int{1, 5, 10, 21, 22, 25, 60, 1000} {
			txn, err := bobs.Backfill(ctx, "b.test", "a.test", room, limit, []string{start})
			if err != nil {
				t.Fatal(err)
			}
			evs := parse(t, txn.PDUs)
			if want := min(limit, len(all)); len(evs) != want {
				t.Fatalf("from %s, limit %d: %d events, want %d", start, limit, len(evs), want)
			}
			got := map[string]bool{}
			minDepth := int64(1 << 62)
			for i, e := range evs {
				if _, ok := all[e.EventID()]; !ok {
					t.Fatalf("from %s, limit %d: %s is not reachable", start, limit, e.EventID())
				}
				if got[e.EventID()] {
					t.Fatalf("from %s, limit %d: %s served twice", start, limit, e.EventID())
				}
				if i > 0 && e.Depth() > evs[i-1].Depth() {
					t.Fatalf("from %s, limit %d: not deepest first at %d", start, limit, i)
				}
				got[e.EventID()] = true
				minDepth = min(minDepth, e.Depth())
			}
			// Deepest first: nothing left out is deeper than what was served.
			for id, d := range all {
				if !got[id] && d > minDepth {
					t.Fatalf("from %s, limit %d: left out %s at depth %d, served down to %d", start, limit, id, d, minDepth)
				}
			}
		}
	}
}
