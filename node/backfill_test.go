package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth/node"
	"hearth/node/roomserver"
	"hearth/node/storage"
	"hearth/p2p/identity"
)

// network is a set of whole nodes in one process: each serves its client
// API and its federation API with httptest on 127.0.0.1, and reaches the
// others by server name through a RoundTripper, as it would over libp2p.
type network struct {
	t     testing.TB
	mu    sync.Mutex
	feds  map[string]*url.URL
	down  map[string]bool
	nodes []*hnode
}

type hnode struct {
	name   string
	node   *node.Node
	client *httptest.Server
	fed    *httptest.Server
}

const peerHeader = "X-Test-Peer"

func newNetwork(t testing.TB) *network {
	return &network{t: t, feds: map[string]*url.URL{}, down: map[string]bool{}}
}

func (n *network) add() *hnode {
	t := n.t
	id, err := identity.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nd, err := node.New(node.Config{
		ServerName: id.ServerName, KeyID: identity.KeyID, PrivateKey: id.Private, KeyOf: identity.PublicKeyOf,
		DB:               storage.Options{Path: filepath.Join(t.TempDir(), "hearth.db")},
		OpenRegistration: true,
		Transport:        &netTransport{n: n, owner: id.ServerName},
		RemotePeer: func(r *http.Request) (string, bool) {
			p := r.Header.Get(peerHeader)
			return p, p != ""
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &hnode{name: id.ServerName, node: nd,
		client: httptest.NewServer(nd.Handler()), fed: httptest.NewServer(nd.FederationHandler())}
	u, _ := url.Parse(h.fed.URL)
	n.mu.Lock()
	n.feds[h.name] = u
	n.nodes = append(n.nodes, h)
	n.mu.Unlock()
	t.Cleanup(func() {
		h.client.Close()
		h.fed.Close()
		nd.Close()
	})
	return h
}

// setDown makes a server unreachable (or reachable again).
func (n *network) setDown(name string, down bool) {
	n.mu.Lock()
	n.down[name] = down
	n.mu.Unlock()
}

type netTransport struct {
	n     *network
	owner string
	inner http.Transport
}

func (t *netTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.n.mu.Lock()
	u, ok := t.n.feds[req.URL.Host]
	down := t.n.down[req.URL.Host]
	t.n.mu.Unlock()
	if !ok || down {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("test network: %s is unreachable", req.URL.Host)
	}
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, u.Host
	r.Header.Set(peerHeader, t.owner)
	return t.inner.RoundTrip(r)
}

// user is a logged-in client of one node.
type user struct {
	t     testing.TB
	id    string
	base  string
	token string
}

func (h *hnode) register(t testing.TB, name string) *user {
	u := &user{t: t, base: h.client.URL}
	var res struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	u.do("POST", "/register", map[string]any{"username": name, "password": "correct horse", "auth": map[string]string{"type": "m.login.dummy"}}, &res)
	u.id, u.token = res.UserID, res.AccessToken
	return u
}

func (u *user) do(method, path string, body, out any) {
	u.t.Helper()
	if err := u.try(method, path, body, out); err != nil {
		u.t.Fatal(err)
	}
}

func (u *user) try(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, u.base+"/_matrix/client/v3"+path, rd)
	if u.token != "" {
		req.Header.Set("Authorization", "Bearer "+u.token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
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
	u.t.Helper()
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
		u.do("GET", "/rooms/"+url.PathEscape(roomID)+"/messages?"+q.Encode(), nil, &res)
		all = append(all, res.Chunk...)
		if res.End == "" {
			for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
				all[i], all[j] = all[j], all[i]
			}
			return all
		}
		from = res.End
	}
	u.t.Fatal("history did not end after 1000 pages")
	return nil
}

func (u *user) createRoom(body map[string]any) string {
	var res struct {
		RoomID string `json:"room_id"`
	}
	u.do("POST", "/createRoom", body, &res)
	return res.RoomID
}

func (u *user) send(roomID, body string, txn int) {
	u.do("PUT", fmt.Sprintf("/rooms/%s/send/m.room.message/t%d", url.PathEscape(roomID), txn),
		map[string]string{"msgtype": "m.text", "body": body}, nil)
}

func (u *user) join(roomID, via string) {
	u.do("POST", "/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(via), map[string]any{}, nil)
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
	bob.join(room, a.name)
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
	net.setDown(a.name, true)
	carol.join(room, b.name)
	if got := bodies(carol.history(room, 100)); len(got) != n {
		t.Fatalf("with A down, carol's history has %d messages, want %d", len(got), n)
	}
	net.setDown(a.name, false)

	// "joined" visibility: a late joiner sees nothing from before.
	secret := alice.createRoom(map[string]any{"preset": "public_chat", "initial_state": []map[string]any{{
		"type": "m.room.history_visibility", "state_key": "", "content": map[string]string{"history_visibility": "joined"}}}})
	alice.send(secret, "before bob", 1)
	bob.join(secret, a.name)
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
			evs[j] = roomserver.NewEvent{Sender: alice.id, Type: "m.room.message", Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"m%d"}`, i+j))}
		}
		if _, err := a.node.Room.Send(context.Background(), room, evs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bn := net.add()
		bob := bn.register(b, "bob")
		start := time.Now()
		bob.join(room, a.name)
		got := bodies(bob.history(room, 1000))
		if len(got) != n {
			b.Fatalf("backfilled %d messages, want %d", len(got), n)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/10k-events")
	}
}
