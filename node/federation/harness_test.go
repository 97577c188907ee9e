package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/federation"
	"hearth/node/internal/testnet"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

// testNet is a set of in-process servers reachable by name (see
// testnet), with the client below for speaking as any of them.
type testNet struct{ *testnet.Net }

func newNet() *testNet { return &testNet{testnet.New()} }

// node is one server: storage, roomserver and federation, restartable on
// the same database file.
type node struct {
	t    testing.TB
	net  *testNet
	name string
	key  ed25519.PrivateKey
	path string

	db  *storage.DB
	rs  *roomserver.Roomserver
	fed *federation.Federation
	srv *testnet.Server
	cur atomic.Pointer[federation.Federation]

	mu     sync.Mutex
	seen   map[string]int64 // event ID → stream position, for events in the stream
	order  []string
	notify chan struct{}
	edus   []gomatrixserverlib.EDU
}

var fastBackoff = func(c *federation.Config) {
	c.MinBackoff, c.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
}

func newNode(t testing.TB, n *testNet, name string) *node {
	t.Helper()
	pub, key, _ := ed25519.GenerateKey(nil)
	n.AddKey(name, pub)
	nd := &node{t: t, net: n, name: name, key: key, path: filepath.Join(t.TempDir(), "hearth.db"),
		seen: map[string]int64{}, notify: make(chan struct{})}
	nd.start()
	t.Cleanup(nd.stop)
	return nd
}

func (nd *node) start() {
	t := nd.t
	db, err := storage.Open(storage.Options{Path: nd.path})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateUserData(); err != nil {
		t.Fatal(err)
	}
	if err := db.MigrateAccounts(); err != nil {
		t.Fatal(err)
	}
	rs, err := roomserver.New(db, roomserver.Config{
		ServerName: spec.ServerName(nd.name), KeyID: testnet.KeyID, PrivateKey: nd.key,
		Verifier: nd.net.Verifier(),
		OnOutput: func(outs []roomserver.Output) {
			nd.record(outs)
			if f := nd.cur.Load(); f != nil {
				f.OnOutput(outs)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := federation.Config{
		ServerName: spec.ServerName(nd.name), KeyID: testnet.KeyID, PrivateKey: nd.key,
		Transport: nd.net.Transport(nd.name), Verifier: nd.net.Verifier(),
		RemotePeer: testnet.RemotePeer,
		OnEDU: func(origin string, edu gomatrixserverlib.EDU) {
			nd.mu.Lock()
			nd.edus = append(nd.edus, edu)
			nd.mu.Unlock()
		},
	}
	fastBackoff(&cfg)
	fed, err := federation.New(cfg, db, rs)
	if err != nil {
		t.Fatal(err)
	}
	nd.db, nd.rs, nd.fed = db, rs, fed
	nd.cur.Store(fed)
	if err := rs.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := fed.Start(); err != nil {
		t.Fatal(err)
	}
	nd.srv = nd.net.Serve(nd.name, fed.Handler())
}

// stop takes the server off the network and closes everything.
func (nd *node) stop() {
	if nd.db == nil {
		return
	}
	nd.srv.Close()
	nd.cur.Store(nil)
	nd.fed.Close()
	nd.rs.Close()
	nd.db.Close()
	nd.db = nil
}

func (nd *node) restart() { nd.stop(); nd.start() }

// sharedRoom is two servers, A and B, and a public room on A that alice
// made and B's bob joined.
func sharedRoom(t testing.TB) (n *testNet, a, b *node, alice, bob, room string) {
	t.Helper()
	n = newNet()
	a, b = newNode(t, n, "a.test"), newNode(t, n, "b.test")
	alice, bob = a.user("alice"), b.user("bob")
	room = a.publicRoom(alice, "shared")
	b.join(room, bob, "a.test")
	return n, a, b, alice, bob, room
}

func (nd *node) record(outs []roomserver.Output) {
	nd.mu.Lock()
	for _, o := range outs {
		if _, ok := nd.seen[o.Event.EventID()]; !ok {
			nd.seen[o.Event.EventID()] = o.Pos
			nd.order = append(nd.order, o.Event.EventID())
		}
	}
	close(nd.notify)
	nd.notify = make(chan struct{})
	nd.mu.Unlock()
}

// waitFor waits (bounded) until every event entered nd's stream.
func (nd *node) waitFor(timeout time.Duration, ids ...string) error {
	deadline := time.After(timeout)
	for {
		nd.mu.Lock()
		missing := 0
		for _, id := range ids {
			if _, ok := nd.seen[id]; !ok {
				missing++
			}
		}
		ch := nd.notify
		nd.mu.Unlock()
		if missing == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-deadline:
			return fmt.Errorf("%s: %d of %d events did not arrive within %v", nd.name, missing, len(ids), timeout)
		}
	}
}

func (nd *node) mustWait(ids ...string) {
	nd.t.Helper()
	if err := nd.waitFor(30*time.Second, ids...); err != nil {
		nd.t.Fatal(err)
	}
}

// streamOrder is the order in which ids entered nd's stream.
func (nd *node) streamPos(id string) int64 {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.seen[id]
}

func (nd *node) user(local string) string {
	id := "@" + local + ":" + nd.name
	if _, err := nd.db.CreateAccount(context.Background(), storage.NewAccount{UserID: id, DisplayName: local}); err != nil && !errors.Is(err, storage.ErrExists) {
		nd.t.Fatal(err)
	}
	return id
}

func sk(s string) *string { return &s }

func js(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func msg(user, body string) roomserver.NewEvent {
	return roomserver.NewEvent{Sender: user, Type: "m.room.message", Content: js(map[string]string{"msgtype": "m.text", "body": body})}
}

func member(sender, target, membership string) roomserver.NewEvent {
	return roomserver.NewEvent{Sender: sender, Type: spec.MRoomMember, StateKey: sk(target), Content: js(map[string]string{"membership": membership})}
}

// publicRoom creates a public room with the given history visibility.
func (nd *node) publicRoom(creator, visibility string) string {
	nd.t.Helper()
	id, err := nd.rs.CreateRoom(context.Background(), "", creator, nil, []roomserver.NewEvent{
		member(creator, creator, "join"),
		{Sender: creator, Type: spec.MRoomPowerLevels, StateKey: sk(""), Content: js(map[string]any{"users": map[string]int{creator: 100}})},
		{Sender: creator, Type: spec.MRoomJoinRules, StateKey: sk(""), Content: js(map[string]string{"join_rule": "public"})},
		{Sender: creator, Type: spec.MRoomHistoryVisibility, StateKey: sk(""), Content: js(map[string]string{"history_visibility": visibility})},
	})
	if err != nil {
		nd.t.Fatal(err)
	}
	return id
}

func (nd *node) send(roomID string, evs ...roomserver.NewEvent) []string {
	nd.t.Helper()
	ids, err := nd.rs.Send(context.Background(), roomID, evs...)
	if err != nil {
		nd.t.Fatalf("%s: send: %v", nd.name, err)
	}
	return ids
}

func (nd *node) join(roomID, user string, via ...string) {
	nd.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := nd.fed.PerformJoin(ctx, roomID, user, via); err != nil {
		nd.t.Fatalf("%s: join %s: %v", nd.name, roomID, err)
	}
}

// stateIDs is a room's current state as (type, state key) → event ID.
func (nd *node) stateIDs(roomID string) map[string]string {
	nd.t.Helper()
	st, err := nd.rs.CurrentState(context.Background(), roomID)
	if err != nil {
		nd.t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range st {
		out[e.Type()+"|"+*e.StateKey()] = e.EventID()
	}
	return out
}

// client signs requests as name (with key) and sends them over owner's
// connection: a hostile peer may claim to be someone else.
func (n *testNet) client(name string, key ed25519.PrivateKey, owner string) fclient.FederationClient {
	return fclient.NewFederationClient(
		[]*fclient.SigningIdentity{{ServerName: spec.ServerName(name), KeyID: testnet.KeyID, PrivateKey: key}},
		fclient.WithTransport(n.Transport(owner)), fclient.WithTimeout(30*time.Second))
}
