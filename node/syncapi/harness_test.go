package syncapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/httputil"
	"hearth/node/internal/testdb"
	"hearth/node/roomserver"
	"hearth/node/storage"
	"hearth/node/syncapi"
)

const server = "hearth.test"

var (
	alice = "@alice:" + server
	bob   = "@bob:" + server
	carol = "@carol:" + server
)

// harness is a real node core: SQLite in a temp dir, the roomserver
// feeding the syncer, and the sync handlers over real HTTP. Requests
// authenticate with "Authorization: Bearer <user>|<device>".
type harness struct {
	t   testing.TB
	db  *storage.DB
	rs  *roomserver.Roomserver
	sy  *syncapi.Syncer
	srv *httptest.Server
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessCfg(t, syncapi.Config{MaxTimeout: 10 * time.Second})
}

func newHarnessCfg(t testing.TB, cfg syncapi.Config) *harness {
	t.Helper()
	return newHarnessOpts(t, cfg, testdb.Options(t))
}

// exclusive is o with the browser's single connection.
func exclusive(o storage.Options) storage.Options { o.Exclusive = true; return o }

func newHarnessOpts(t testing.TB, cfg syncapi.Config, opts storage.Options) *harness {
	t.Helper()
	db, err := storage.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	sy, err := syncapi.New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(nil)
	rs, err := roomserver.New(db, roomserver.Config{
		ServerName: server, KeyID: "ed25519:p2p", PrivateKey: key,
		DefaultRoomVersion: gomatrixserverlib.RoomVersionV12,
		OnOutput: func(outs []roomserver.Output) {
			evs := make([]syncapi.RoomEvent, len(outs))
			for i, o := range outs {
				evs[i] = syncapi.NewRoomEvent(o.Pos, o.RoomID, o.Event)
			}
			sy.OnRoomEvents(evs)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: db, rs: rs, sy: sy}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/client/v3/sync", auth(sy.HandleSync))
	mux.HandleFunc("GET /_matrix/client/v3/rooms/{roomId}/messages", auth(sy.HandleMessages))
	mux.HandleFunc("GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}", auth(sy.HandleContext))
	mux.HandleFunc("GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}", auth(sy.HandleEvent))
	h.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		h.srv.Close()
		rs.Close()
		sy.Close()
		db.Close()
	})
	return h
}

func auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		user, device, ok := strings.Cut(tok, "|")
		if !ok {
			next(w, r) // no device in the context: the handler must refuse
			return
		}
		next(w, r.WithContext(httputil.WithDevice(r.Context(), &httputil.Device{UserID: user, DeviceID: device})))
	}
}

func sk(s string) *string { return &s }

func js(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func member(sender, target, membership string) roomserver.NewEvent {
	return roomserver.NewEvent{Sender: sender, Type: spec.MRoomMember, StateKey: sk(target), Content: js(map[string]string{"membership": membership})}
}

func msg(sender, body string) roomserver.NewEvent {
	return roomserver.NewEvent{Sender: sender, Type: "m.room.message", Content: js(map[string]string{"msgtype": "m.text", "body": body})}
}

func state(sender, typ, key string, content any) roomserver.NewEvent {
	return roomserver.NewEvent{Sender: sender, Type: typ, StateKey: sk(key), Content: js(content)}
}

// createRoom makes a public room with a name, the way /createRoom does.
func (h *harness) createRoom(creator string) string {
	h.t.Helper()
	id, err := h.rs.CreateRoom(context.Background(), "", creator, nil, []roomserver.NewEvent{
		member(creator, creator, "join"),
		state(creator, spec.MRoomPowerLevels, "", map[string]any{"invite": 0}),
		state(creator, spec.MRoomJoinRules, "", map[string]string{"join_rule": "public"}),
		state(creator, spec.MRoomHistoryVisibility, "", map[string]string{"history_visibility": "shared"}),
		state(creator, "m.room.name", "", map[string]string{"name": "A room"}),
	})
	if err != nil {
		h.t.Fatalf("create room: %v", err)
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

// pos is an event's stream position.
func (h *harness) pos(eventID string) int64 {
	h.t.Helper()
	ev, err := h.db.EventByID(context.Background(), eventID)
	if err != nil {
		h.t.Fatalf("event %s: %v", eventID, err)
	}
	return ev.StreamPos
}

// get performs an authenticated GET and decodes the JSON answer into out
// (when not nil), returning the status.
func (h *harness) get(user, path string, q url.Values, out any) int {
	h.t.Helper()
	return h.getCtx(context.Background(), user, path, q, out)
}

func (h *harness) getCtx(ctx context.Context, user, path string, q url.Values, out any) int {
	h.t.Helper()
	u := h.srv.URL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+user)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			h.t.Fatalf("GET %s: %d %s: %v", path, resp.StatusCode, body, err)
		}
	}
	return resp.StatusCode
}

// longPoll runs one /sync over HTTP and returns its next_batch and
// whether the response carried the room ("" on error or cancellation).
func (h *harness) longPoll(ctx context.Context, user, since, room string) (string, bool) {
	q := url.Values{"since": {since}, "timeout": {"60000"}}
	req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+"/_matrix/client/v3/sync?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+dev(user))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	var r syncResp
	if json.NewDecoder(resp.Body).Decode(&r) != nil {
		return "", false
	}
	_, ok := r.Rooms.Join[room]
	return r.NextBatch, ok
}

// dev is the token of a user's default test device.
func dev(user string) string { return user + "|DEV" }

// Response shapes, as a client reads them.
type clientEvent struct {
	EventID  string          `json:"event_id"`
	Type     string          `json:"type"`
	Sender   string          `json:"sender"`
	RoomID   string          `json:"room_id"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
	Unsigned map[string]any  `json:"unsigned"`
}

type eventList struct {
	Events []clientEvent `json:"events"`
}

type timelineResp struct {
	Events    []clientEvent `json:"events"`
	Limited   bool          `json:"limited"`
	PrevBatch string        `json:"prev_batch"`
}

type roomResp struct {
	State       eventList    `json:"state"`
	Timeline    timelineResp `json:"timeline"`
	AccountData eventList    `json:"account_data"`
	Ephemeral   *eventList   `json:"ephemeral"`
}

type syncResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]roomResp `json:"join"`
		Invite map[string]struct {
			InviteState eventList `json:"invite_state"`
		} `json:"invite"`
		Leave map[string]roomResp `json:"leave"`
		Knock map[string]any      `json:"knock"`
	} `json:"rooms"`
	AccountData *eventList `json:"account_data"`
	Presence    *eventList `json:"presence"`
	ToDevice    *eventList `json:"to_device"`
	DeviceLists *struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
}

type matrixError struct {
	Code string `json:"errcode"`
	Msg  string `json:"error"`
}

type messagesResp struct {
	Chunk []clientEvent `json:"chunk"`
	Start string        `json:"start"`
	End   string        `json:"end"`
	State []clientEvent `json:"state"`
}

// sync runs /sync for a user's default device.
func (h *harness) sync(user, since, filter string, extra ...string) syncResp {
	h.t.Helper()
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	var res syncResp
	if code := h.get(dev(user), "/_matrix/client/v3/sync", q, &res); code != 200 {
		h.t.Fatalf("sync: status %d", code)
	}
	return res
}

func (h *harness) messages(user, roomID string, q url.Values) messagesResp {
	h.t.Helper()
	var res messagesResp
	if code := h.get(dev(user), "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages", q, &res); code != 200 {
		h.t.Fatalf("messages: status %d", code)
	}
	return res
}

func ids(evs []clientEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.EventID
	}
	return out
}

func eq(a, b []string) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func contains(evs []clientEvent, id string) bool {
	for _, e := range evs {
		if e.EventID == id {
			return true
		}
	}
	return false
}

func tok(pos int64) string { return fmt.Sprintf("s%d", pos) }
