package clientapi_test

import (
	"bytes"
	"crypto/ed25519"
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

	"golang.org/x/crypto/bcrypt"

	"hearth/node/clientapi"
	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
	"hearth/node/syncapi"
)

const server = "hearth.test"

// node is a real client API over real storage and a real roomserver,
// served over HTTP by httptest.
type node struct {
	t   testing.TB
	db  *storage.DB
	rs  *roomserver.Roomserver
	mux *http.ServeMux
	srv *httptest.Server

	mu          sync.Mutex
	accountData []string // "user pos" from OnAccountData
	typing      []string
	receipts    []string
}

// noSync stands in for most of node/syncapi, which this package does not
// test: the sync endpoints echo who called them and with which path
// values, so tests can check the client API authenticated the request
// first. GET /event is the real syncer's.
type noSync struct{ event http.HandlerFunc }

func echo(w http.ResponseWriter, r *http.Request) {
	d := httputil.DeviceFrom(r.Context())
	json.NewEncoder(w).Encode(map[string]string{
		"user": d.UserID, "device": d.DeviceID, "room": r.PathValue("roomId"), "event": r.PathValue("eventId"),
	})
}

func (noSync) HandleSync(w http.ResponseWriter, r *http.Request)        { echo(w, r) }
func (noSync) HandleMessages(w http.ResponseWriter, r *http.Request)    { echo(w, r) }
func (noSync) HandleContext(w http.ResponseWriter, r *http.Request)     { echo(w, r) }
func (noSync) HandleSlidingSync(w http.ResponseWriter, r *http.Request) { echo(w, r) }
func (s noSync) HandleEvent(w http.ResponseWriter, r *http.Request)     { s.event(w, r) }

func newNode(t testing.TB, tweak ...func(*clientapi.Config)) *node {
	t.Helper()
	db, err := storage.Open(storage.Options{Path: filepath.Join(t.TempDir(), "hearth.db")})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []func() error{db.MigrateUserData, db.MigrateAccounts} {
		if err := m(); err != nil {
			t.Fatal(err)
		}
	}
	_, key, _ := ed25519.GenerateKey(nil)
	sy, err := syncapi.New(db, syncapi.Config{ServerName: server})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := roomserver.New(db, roomserver.Config{ServerName: server, KeyID: "ed25519:p2p", PrivateKey: key,
		OnOutput: func(outs []roomserver.Output) {
			evs := make([]syncapi.RoomEvent, len(outs))
			for i, o := range outs {
				evs[i] = syncapi.NewRoomEvent(o.Pos, o.RoomID, o.Event)
			}
			sy.OnRoomEvents(evs)
		}})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, db: db, rs: rs, mux: http.NewServeMux()}
	cfg := clientapi.Config{
		ServerName:       server,
		OpenRegistration: true,
		BcryptCost:       bcrypt.MinCost,
		OnAccountData: func(user string, pos int64) {
			n.mu.Lock()
			n.accountData = append(n.accountData, fmt.Sprintf("%s %d", user, pos))
			n.mu.Unlock()
		},
		OnTyping: func(room, user string, typing bool, _ time.Duration) {
			n.mu.Lock()
			n.typing = append(n.typing, fmt.Sprintf("%s %s %v", room, user, typing))
			n.mu.Unlock()
		},
	}
	cfg.OnReceipt = func(room, user, typ, ev, thread string) {
		n.mu.Lock()
		n.receipts = append(n.receipts, fmt.Sprintf("%s %s %s %s", room, user, typ, ev))
		n.mu.Unlock()
	}
	for _, f := range tweak {
		f(&cfg)
	}
	clientapi.New(cfg, db, rs, noSync{sy.HandleEvent}).Register(n.mux)
	n.srv = httptest.NewServer(n.mux)
	t.Cleanup(func() {
		n.srv.Close()
		rs.Close()
		db.Close()
	})
	return n
}

// resp is a decoded answer.
type resp struct {
	status int
	body   map[string]any
	raw    []byte
	header http.Header
}

func (r resp) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

// do sends a request. body is a string (sent as is), nil, or a value
// encoded as JSON.
func (n *node) do(method, path, token string, body any) resp {
	n.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			n.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, n.srv.URL+path, rd)
	if err != nil {
		n.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := resp{status: res.StatusCode, raw: raw, header: res.Header}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			n.t.Fatalf("%s %s: answer is not JSON: %s", method, path, raw)
		}
	}
	return out
}

// ok is do that expects 200.
func (n *node) ok(method, path, token string, body any) resp {
	n.t.Helper()
	r := n.do(method, path, token, body)
	if r.status != 200 {
		n.t.Fatalf("%s %s: status %d: %s", method, path, r.status, r.raw)
	}
	return r
}

// expect is do that expects an error status and errcode.
func (n *node) expect(status int, code, method, path, token string, body any) resp {
	n.t.Helper()
	r := n.do(method, path, token, body)
	if r.status != status || r.str("errcode") != code {
		n.t.Fatalf("%s %s: want %d %s, got %d: %s", method, path, status, code, r.status, r.raw)
	}
	return r
}

// user is a registered account with one device.
type user struct {
	id, token, device string
}

func (n *node) register(local string) user {
	n.t.Helper()
	r := n.ok("POST", "/_matrix/client/v3/register", "", map[string]any{
		"username": local, "password": "secret-" + local, "auth": map[string]string{"type": "m.login.dummy"},
	})
	return user{id: r.str("user_id"), token: r.str("access_token"), device: r.str("device_id")}
}

const v3 = "/_matrix/client/v3"

func esc(s string) string { return url.PathEscape(s) }

// createRoom creates a room and returns its ID.
func (n *node) createRoom(u user, body map[string]any) string {
	n.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	r := n.ok("POST", v3+"/createRoom", u.token, body)
	id := r.str("room_id")
	if !strings.HasPrefix(id, "!") {
		n.t.Fatalf("createRoom: bad room_id in %s", r.raw)
	}
	return id
}

// state reads one state event's content.
func (n *node) state(u user, roomID, typ, key string) map[string]any {
	n.t.Helper()
	return n.ok("GET", v3+"/rooms/"+esc(roomID)+"/state/"+esc(typ)+"/"+esc(key), u.token, nil).body
}

// send sends a message and returns its event ID.
func (n *node) send(u user, roomID, txn string, content map[string]any) string {
	n.t.Helper()
	r := n.ok("PUT", v3+"/rooms/"+esc(roomID)+"/send/m.room.message/"+txn, u.token, content)
	return r.str("event_id")
}

// counts returns the row counts of the tables a bad request must not
// touch.
func (n *node) counts() map[string]int {
	n.t.Helper()
	return n.countsFor(n.t)
}

// countsFor is counts reporting to t (a fuzz target's own T).
func (n *node) countsFor(t testing.TB) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, tbl := range []string{"events", "rooms", "accounts", "devices", "room_aliases", "room_directory", "account_data", "filters", "transactions"} {
		var c int
		if err := n.db.R().QueryRow("SELECT COUNT(*) FROM " + tbl).Scan(&c); err != nil {
			t.Fatal(err)
		}
		out[tbl] = c
	}
	return out
}
