package syncapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

const slidingPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

type slidingRoomResp struct {
	Name              string        `json:"name"`
	Initial           bool          `json:"initial"`
	RequiredState     []clientEvent `json:"required_state"`
	Timeline          []clientEvent `json:"timeline"`
	PrevBatch         string        `json:"prev_batch"`
	Limited           bool          `json:"limited"`
	JoinedCount       int           `json:"joined_count"`
	InvitedCount      int           `json:"invited_count"`
	NotificationCount int           `json:"notification_count"`
	BumpStamp         int64         `json:"bump_stamp"`
	InviteState       []clientEvent `json:"invite_state"`
	Heroes            []struct {
		UserID string `json:"user_id"`
	} `json:"heroes"`
}

type slidingResp struct {
	Pos   string `json:"pos"`
	Lists map[string]struct {
		Count int `json:"count"`
	} `json:"lists"`
	Rooms      map[string]slidingRoomResp `json:"rooms"`
	Extensions struct {
		ToDevice *struct {
			NextBatch string        `json:"next_batch"`
			Events    []clientEvent `json:"events"`
		} `json:"to_device"`
		E2EE *struct {
			DeviceLists struct {
				Changed []string `json:"changed"`
			} `json:"device_lists"`
			OTKCounts map[string]int `json:"device_one_time_keys_count"`
			Fallback  []string       `json:"device_unused_fallback_key_types"`
		} `json:"e2ee"`
		AccountData *struct {
			Global []clientEvent            `json:"global"`
			Rooms  map[string][]clientEvent `json:"rooms"`
		} `json:"account_data"`
		Receipts *struct {
			Rooms map[string]clientEvent `json:"rooms"`
		} `json:"receipts"`
		Typing *struct {
			Rooms map[string]clientEvent `json:"rooms"`
		} `json:"typing"`
	} `json:"extensions"`
	Errcode string `json:"errcode"`
}

// slider serves the sliding sync endpoint of a harness's syncer.
func slider(h *harness) *httptest.Server {
	srv := httptest.NewServer(auth(h.sy.HandleSlidingSync))
	h.t.Cleanup(srv.Close)
	return srv
}

func slide(t *testing.T, ctx context.Context, srv *httptest.Server, token, pos, timeout string, body string) (int, slidingResp) {
	t.Helper()
	q := url.Values{}
	if pos != "" {
		q.Set("pos", pos)
	}
	if timeout != "" {
		q.Set("timeout", timeout)
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+slidingPath+"?"+q.Encode(), bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil { // Errorf, not Fatalf: long-polls run this off the test goroutine
		t.Errorf("sliding sync: %v", err)
		return 0, slidingResp{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r slidingResp
	if err := json.Unmarshal(b, &r); err != nil {
		t.Errorf("sliding sync: %d %s: %v", resp.StatusCode, b, err)
	}
	return resp.StatusCode, r
}

func types(evs []clientEvent) []string {
	out := []string{}
	for _, e := range evs {
		k := ""
		if e.StateKey != nil {
			k = *e.StateKey
		}
		out = append(out, e.Type+"|"+k)
	}
	return out
}

const listBody = `{"lists":{"all":{"ranges":[[0,1]],"timeline_limit":2,
	"required_state":[["m.room.name",""],["m.room.member","$ME"]]}}}`

func TestSlidingSyncLists(t *testing.T) {
	h := newHarness(t)
	srv := slider(h)
	ctx := context.Background()
	r1 := h.createRoom(alice)
	r2 := h.createRoom(alice)
	r3 := h.createRoom(alice)
	h.send(r1, msg(alice, "bump r1"))
	invite := h.createRoom(carol)
	h.send(invite, member(carol, alice, "invite"))
	// The invite is the newest activity: alice's window is it and r1.
	code, res := slide(t, ctx, srv, dev(alice), "", "", listBody)
	if code != 200 {
		t.Fatalf("initial: %d %+v", code, res)
	}
	if res.Lists["all"].Count != 4 {
		t.Errorf("count = %d, want 4", res.Lists["all"].Count)
	}
	if len(res.Rooms) != 2 {
		t.Fatalf("rooms: %v", res.Rooms)
	}
	got := res.Rooms[r1]
	if !got.Initial || got.Name != "A room" || got.JoinedCount != 1 || got.BumpStamp == 0 {
		t.Errorf("r1: %+v", got)
	}
	if !eq(types(got.RequiredState), []string{"m.room.member|" + alice, "m.room.name|"}) {
		t.Errorf("r1 required_state: %v", types(got.RequiredState))
	}
	if len(got.Timeline) != 2 || !got.Limited || got.PrevBatch == "" || got.Timeline[1].Type != "m.room.message" {
		t.Errorf("r1 timeline: %d limited=%v prev=%q", len(got.Timeline), got.Limited, got.PrevBatch)
	}
	inv := res.Rooms[invite]
	if len(inv.InviteState) == 0 || inv.Name != "A room" || len(inv.Timeline) != 0 {
		t.Errorf("invite: %+v", inv)
	}
	pos := res.Pos

	steps := []struct {
		name   string
		action func()
		body   string
		want   []string // rooms in the answer
		check  func(t *testing.T, r slidingResp)
	}{
		// r2 moves into the window: the connection never had it, so it
		// comes in full.
		{"a changed room only", func() { h.send(r2, msg(alice, "news")) }, listBody, []string{r2},
			func(t *testing.T, r slidingResp) {
				rr := r.Rooms[r2]
				if !rr.Initial || len(rr.Timeline) != 2 || !rr.Limited || len(rr.RequiredState) != 2 {
					t.Errorf("r2: %+v", rr)
				}
			}},
		{"a state change in required_state", func() { h.send(r2, state(alice, "m.room.name", "", map[string]string{"name": "Renamed"})) }, listBody, []string{r2},
			func(t *testing.T, r slidingResp) {
				rr := r.Rooms[r2]
				if rr.Name != "Renamed" || !eq(types(rr.RequiredState), []string{"m.room.name|"}) {
					t.Errorf("r2: %+v", rr)
				}
			}},
		// The invite was sent with other room parameters, so it goes again.
		{"is_invite filter", func() {}, `{"lists":{"inv":{"ranges":[[0,9]],"filters":{"is_invite":true}}}}`, []string{invite},
			func(t *testing.T, r slidingResp) {
				if r.Lists["inv"].Count != 1 {
					t.Errorf("invites: %d", r.Lists["inv"].Count)
				}
			}},
		{"room subscription outside the window", func() { h.send(r3, msg(alice, "r3 news")) },
			`{"room_subscriptions":{"` + r3 + `":{"timeline_limit":1,"required_state":[["*","*"]]}}}`, []string{r3},
			func(t *testing.T, r slidingResp) {
				rr := r.Rooms[r3]
				if len(rr.Timeline) != 1 || rr.Timeline[0].Type != "m.room.message" {
					t.Errorf("r3 timeline: %+v", rr.Timeline)
				}
			}},
		{"heroes name a room without a name", func() {
			h.send(r3, member(bob, bob, "join"), state(alice, "m.room.name", "", map[string]string{}))
		}, `{"room_subscriptions":{"` + r3 + `":{"timeline_limit":0}}}`, []string{r3},
			func(t *testing.T, r slidingResp) {
				rr := r.Rooms[r3]
				if rr.Name != bob || rr.JoinedCount != 2 || len(rr.Heroes) != 1 {
					t.Errorf("r3: %+v", rr)
				}
			}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.action()
			code, r := slide(t, ctx, srv, dev(alice), pos, "", st.body)
			if code != 200 {
				t.Fatalf("%d %+v", code, r)
			}
			var ids []string
			for id := range r.Rooms {
				ids = append(ids, id)
			}
			if len(ids) != len(st.want) || (len(ids) == 1 && ids[0] != st.want[0]) {
				t.Errorf("rooms %v, want %v", ids, st.want)
			}
			st.check(t, r)
			pos = r.Pos
		})
	}
}

func TestSlidingSyncExtensions(t *testing.T) {
	h := newHarness(t)
	srv := slider(h)
	ctx := context.Background()
	h.account(alice, "DEV")
	h.account(bob, "DEV")
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"))
	ev := h.send(room, msg(alice, "hi"))[0]
	const all = `{"extensions":{"to_device":{"enabled":true%s},"e2ee":{"enabled":true},
		"account_data":{"enabled":true},"receipts":{"enabled":true},"typing":{"enabled":true}}}`
	_, first := slide(t, ctx, srv, dev(bob), "", "", fmtBody(all, ""))
	if first.Extensions.E2EE == nil || first.Extensions.E2EE.OTKCounts == nil || first.Extensions.E2EE.Fallback == nil {
		t.Fatalf("e2ee: %+v", first.Extensions.E2EE)
	}
	pos, td := first.Pos, first.Extensions.ToDevice.NextBatch

	steps := []struct {
		name   string
		action func()
		check  func(t *testing.T, r slidingResp) bool
	}{
		{"to_device", func() {
			if err := h.sy.SendToDevice(ctx, alice, "DEV", "m.test", "t1", msgs(bob, "DEV", "1")); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T, r slidingResp) bool {
			return len(r.Extensions.ToDevice.Events) == 1 && r.Extensions.ToDevice.Events[0].Type == "m.test"
		}},
		{"account_data", func() {
			p, err := h.db.PutAccountData(ctx, bob, room, "m.tag", []byte(`{"tags":{}}`))
			if err != nil {
				t.Fatal(err)
			}
			h.sy.OnAccountData(bob, p)
		}, func(t *testing.T, r slidingResp) bool {
			ad := r.Extensions.AccountData
			return ad != nil && len(ad.Rooms[room]) == 1 && ad.Rooms[room][0].Type == "m.tag"
		}},
		{"receipts", func() { h.sy.OnReceipt(room, alice, "m.read", ev, "") }, func(t *testing.T, r slidingResp) bool {
			rc := r.Extensions.Receipts
			return rc != nil && rc.Rooms[room].Type == "m.receipt"
		}},
		{"typing", func() { h.sy.OnTyping(room, alice, true, time.Minute) }, func(t *testing.T, r slidingResp) bool {
			ty := r.Extensions.Typing
			return ty != nil && ty.Rooms[room].Type == "m.typing" && bytes.Contains(ty.Rooms[room].Content, []byte(alice))
		}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.action()
			code, r := slide(t, ctx, srv, dev(bob), pos, "", fmtBody(all, td))
			if code != 200 || !st.check(t, r) {
				t.Fatalf("%d %+v", code, r.Extensions)
			}
			pos, td = r.Pos, r.Extensions.ToDevice.NextBatch
		})
	}
	// The to-device message was acknowledged by the since above: even
	// from the start, it is gone.
	_, again := slide(t, ctx, srv, dev(bob), "", "", fmtBody(all, ""))
	if n := len(again.Extensions.ToDevice.Events); n != 0 {
		t.Errorf("acknowledged to-device messages redelivered: %d", n)
	}
}

func fmtBody(tmpl, since string) string {
	s := ""
	if since != "" {
		s = `,"since":"` + since + `"`
	}
	return string(bytes.Replace([]byte(tmpl), []byte("%s"), []byte(s), 1))
}

func TestSlidingSyncBadInput(t *testing.T) {
	h := newHarness(t)
	srv := slider(h)
	ctx := context.Background()
	h.createRoom(alice)
	cases := []struct {
		name, pos, body, code string
		status                int
	}{
		{"malformed pos", "garbage", `{}`, "M_UNKNOWN_POS", 400},
		{"pos from the future", "s999999_0", `{}`, "M_UNKNOWN_POS", 400},
		{"not JSON", "", `{`, "M_NOT_JSON", 400},
		{"wrong shape", "", `{"lists":[]}`, "M_BAD_JSON", 400},
		{"bad range", "", `{"lists":{"a":{"ranges":[[5,1]]}}}`, "M_INVALID_PARAM", 400},
		{"bad required_state", "", `{"lists":{"a":{"ranges":[[0,1]],"required_state":[["x"]]}}}`, "M_INVALID_PARAM", 400},
		{"negative timeline_limit", "", `{"room_subscriptions":{"!a:b":{"timeline_limit":-1}}}`, "M_INVALID_PARAM", 400},
		{"conn_id too long", "", `{"conn_id":"` + strings.Repeat("x", 300) + `"}`, "M_INVALID_PARAM", 400},
		{"bad to_device since", "", `{"extensions":{"to_device":{"enabled":true,"since":"x"}}}`, "M_INVALID_PARAM", 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, r := slide(t, ctx, srv, dev(alice), c.pos, "", c.body)
			if code != c.status || r.Errcode != c.code {
				t.Errorf("got %d %s, want %d %s", code, r.Errcode, c.status, c.code)
			}
		})
	}
}

func TestSlidingSyncLongPollWakes(t *testing.T) {
	h := newHarness(t)
	srv := slider(h)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	room := h.createRoom(alice)
	other := h.createRoom(bob)
	_, first := slide(t, ctx, srv, dev(alice), "", "", listBody)
	done := make(chan slidingResp, 1)
	go func() {
		_, r := slide(t, ctx, srv, dev(alice), first.Pos, "60000", listBody)
		done <- r
	}()
	// A room alice is not in does not end her poll; her own room does.
	h.send(other, msg(bob, "elsewhere"))
	h.send(room, msg(alice, "wake"))
	select {
	case r := <-done:
		if len(r.Rooms[room].Timeline) == 0 {
			t.Errorf("woken without the room: %+v", r.Rooms)
		}
		if _, ok := r.Rooms[other]; ok {
			t.Errorf("got a room alice is not in")
		}
	case <-ctx.Done():
		t.Fatal("long-poll not woken")
	}
	// With nothing new, a poll ends at its timeout with no rooms and a
	// pos that is still good.
	code, idle := slide(t, ctx, srv, dev(alice), first.Pos, "50", `{"room_subscriptions":{"`+other+`":{}}}`)
	if code != 200 || len(idle.Rooms) != 0 || idle.Pos == "" {
		t.Errorf("idle poll: %d %+v", code, idle)
	}
}
