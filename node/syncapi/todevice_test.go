package syncapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"testing"

	"hearth/node/httputil"
	"hearth/node/storage"
	"hearth/node/syncapi"
)

func toDeviceBodies(evs []clientEvent) []string {
	var out []string
	for _, e := range evs {
		var c struct {
			N string `json:"n"`
		}
		json.Unmarshal(e.Content, &c)
		out = append(out, e.Sender+" "+e.Type+" "+c.N)
	}
	return out
}

func msgs(user, device, n string) map[string]map[string]json.RawMessage {
	return map[string]map[string]json.RawMessage{user: {device: json.RawMessage(`{"n":"` + n + `"}`)}}
}

func TestToDevice(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.account(alice, "DEV")
	h.account(bob, "DEV", "DEV2")
	h.account(carol, "DEV")
	since := map[string]string{}
	for _, tok := range []string{dev(bob), bob + "|DEV2"} {
		since[tok] = h.full(tok, "").NextBatch
	}
	send := func(sender, txn string, m map[string]map[string]json.RawMessage) {
		t.Helper()
		if err := h.sy.SendToDevice(ctx, sender, "DEV", "m.test", txn, m); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name      string
		action    func()
		bob, bob2 []string
	}{
		{"to one device", func() { send(alice, "t1", msgs(bob, "DEV", "1")) }, []string{alice + " m.test 1"}, nil},
		{"a retried transaction is not sent twice", func() { send(alice, "t1", msgs(bob, "DEV", "1")) }, nil, nil},
		{"the same txn ID from another sender is new", func() { send(carol, "t1", msgs(bob, "DEV", "c")) }, []string{carol + " m.test c"}, nil},
		{"to every device", func() { send(alice, "t2", msgs(bob, "*", "all")) }, []string{alice + " m.test all"}, []string{alice + " m.test all"}},
		{"to an unknown device: dropped", func() { send(alice, "t3", msgs(bob, "NOPE", "x")) }, nil, nil},
		{"from a remote server, once per message_id", func() {
			m := syncapi.DirectToDevice{Sender: "@zed:elsewhere", Type: "m.remote", MessageID: "m1", Messages: msgs(bob, "DEV2", "r")}
			for range 2 {
				if err := h.sy.ReceiveToDevice(ctx, "elsewhere", m); err != nil {
					t.Fatal(err)
				}
			}
		}, nil, []string{"@zed:elsewhere m.remote r"}},
	}
	for _, st := range steps {
		st.action()
		for tok, want := range map[string][]string{dev(bob): st.bob, bob + "|DEV2": st.bob2} {
			res := h.full(tok, since[tok])
			if got := toDeviceBodies(res.ToDevice.Events); !eq(got, want) {
				t.Errorf("%s: %s got %v, want %v", st.name, tok, got, want)
			}
			since[tok] = res.NextBatch
		}
	}

	// Delivered until acknowledged: a lost answer (the same since again)
	// brings the message back; the next since deletes it.
	before := since[dev(bob)]
	send(alice, "t4", msgs(bob, "DEV", "again"))
	first := h.full(dev(bob), before)
	second := h.full(dev(bob), before)
	if !eq(toDeviceBodies(first.ToDevice.Events), toDeviceBodies(second.ToDevice.Events)) || len(first.ToDevice.Events) != 1 {
		t.Fatalf("redelivery: %v then %v", toDeviceBodies(first.ToDevice.Events), toDeviceBodies(second.ToDevice.Events))
	}
	if n, _ := h.db.PendingToDevice(ctx, bob, "DEV"); n == 0 {
		t.Fatal("message deleted before it was acknowledged")
	}
	if got := h.full(dev(bob), second.NextBatch); len(got.ToDevice.Events) != 0 {
		t.Errorf("acknowledged message sent again: %v", toDeviceBodies(got.ToDevice.Events))
	}
	if n, err := h.db.PendingToDevice(ctx, bob, "DEV"); err != nil || n != 0 {
		t.Errorf("%d messages kept after acknowledgement (%v)", n, err)
	}

	// A flood comes in pages of 100, none lost.
	for i := range 150 {
		send(alice, fmt.Sprintf("flood%d", i), msgs(bob, "DEV2", fmt.Sprint(i)))
	}
	var got []string
	s := since[bob+"|DEV2"]
	for range 3 {
		res := h.full(bob+"|DEV2", s)
		got = append(got, toDeviceBodies(res.ToDevice.Events)...)
		s = res.NextBatch
	}
	if len(got) != 150 || got[0] != alice+" m.test 0" || got[149] != alice+" m.test 149" {
		t.Errorf("flood: %d messages, first %q", len(got), got[:min(1, len(got))])
	}

	// Messages from an ignored user are not delivered.
	pos, err := h.db.PutAccountData(ctx, bob, "", "m.ignored_user_list", []byte(`{"ignored_users":{"`+alice+`":{}}}`))
	if err != nil {
		t.Fatal(err)
	}
	h.sy.OnAccountData(bob, pos)
	s = h.full(dev(bob), second.NextBatch).NextBatch
	send(alice, "t5", msgs(bob, "DEV", "ignored"))
	send(carol, "t5", msgs(bob, "DEV", "heard"))
	if got := toDeviceBodies(h.full(dev(bob), s).ToDevice.Events); !eq(got, []string{carol + " m.test heard"}) {
		t.Errorf("with alice ignored: %v", got)
	}

	// Messages for a deleted device go at the next start.
	send(carol, "t6", msgs(bob, "DEV2", "orphan"))
	if _, err := h.db.DeleteDevices(ctx, bob, []string{"DEV2"}); err != nil {
		t.Fatal(err)
	}
	again, err := syncapi.New(h.db, syncapi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
	if n, err := h.db.PendingToDevice(ctx, bob, "DEV2"); err != nil || n != 0 {
		t.Errorf("%d messages kept for a deleted device (%v)", n, err)
	}
}

func TestDeviceLists(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for _, u := range []string{alice, bob, carol} {
		h.account(u, "DEV")
	}
	room := h.createRoom(alice)
	h.send(room, member(bob, bob, "join"))
	h.createRoom(carol)
	since := map[string]string{}
	for _, u := range []string{alice, bob, carol} {
		since[u] = h.full(dev(u), "").NextBatch
	}
	start := since[alice]
	type lists struct{ changed, left []string }
	steps := []struct {
		name   string
		action func()
		want   map[string]lists
	}{
		{"bob's keys change", func() { h.sy.DeviceListChanged(ctx, bob, []string{"DEV"}, false) },
			map[string]lists{alice: {[]string{bob}, nil}, bob: {[]string{bob}, nil}, carol: {}}},
		{"a remote user's devices change, sharing no room", func() { h.sy.ReceiveDeviceListUpdate(ctx, "@zed:elsewhere") },
			map[string]lists{alice: {}, bob: {}, carol: {}}},
		{"carol joins", func() { h.send(room, member(carol, carol, "join")) },
			map[string]lists{alice: {[]string{carol}, nil}, bob: {[]string{carol}, nil}, carol: {[]string{alice, bob}, nil}}},
		{"carol changes her name: no change", func() {
			h.send(room, state(carol, "m.room.member", carol, map[string]string{"membership": "join", "displayname": "C"}))
		}, map[string]lists{alice: {}, bob: {}, carol: {}}},
		{"carol leaves", func() { h.send(room, member(carol, carol, "leave")) },
			map[string]lists{alice: {nil, []string{carol}}, bob: {nil, []string{carol}}, carol: {nil, []string{alice, bob}}}},
	}
	var beforeLeave string
	for _, st := range steps {
		if st.name == "carol leaves" {
			beforeLeave = since[alice]
		}
		st.action()
		for _, u := range []string{alice, bob, carol} {
			res := h.full(dev(u), since[u])
			want := st.want[u]
			if !eq(res.DeviceLists.Changed, want.changed) && !(len(res.DeviceLists.Changed) == 0 && len(want.changed) == 0) {
				t.Errorf("%s: %s's changed %v, want %v", st.name, u, res.DeviceLists.Changed, want.changed)
			}
			if !eq(res.DeviceLists.Left, want.left) && !(len(res.DeviceLists.Left) == 0 && len(want.left) == 0) {
				t.Errorf("%s: %s's left %v, want %v", st.name, u, res.DeviceLists.Left, want.left)
			}
			since[u] = res.NextBatch
		}
	}
	// /keys/changes says the same between two tokens: over the whole
	// run carol came and went (no change for alice), over the last step
	// she left.
	changed, left, err := h.sy.KeyChanges(ctx, alice, start, since[alice])
	if err != nil || !eq(changed, []string{bob}) || len(left) != 0 {
		t.Errorf("key changes over the run: %v %v %v", changed, left, err)
	}
	changed, left, err = h.sy.KeyChanges(ctx, alice, beforeLeave, since[alice])
	if err != nil || len(changed) != 0 || !eq(left, []string{carol}) {
		t.Errorf("key changes over carol's leave: %v %v %v", changed, left, err)
	}
	for _, bad := range [][2]string{{"garbage", since[alice]}, {start, "t5"}, {"s-1", start}} {
		_, _, err := h.sy.KeyChanges(ctx, alice, bad[0], bad[1])
		var herr *httputil.Error
		if !errors.As(err, &herr) || herr.Code != "M_INVALID_PARAM" {
			t.Errorf("key changes %v: %v", bad, err)
		}
	}

	// One-time and fallback keys are counted in every answer.
	otks := []storage.OneTimeKey{{KeyID: "signed_curve25519:A", Algorithm: "signed_curve25519", Key: []byte(`{}`)},
		{KeyID: "signed_curve25519:B", Algorithm: "signed_curve25519", Key: []byte(`{}`)}}
	fb := []storage.OneTimeKey{{KeyID: "signed_curve25519:F", Algorithm: "signed_curve25519", Key: []byte(`{}`)}}
	if _, err := h.db.PutDeviceKeys(ctx, alice, "DEV", nil, otks, fb); err != nil {
		t.Fatal(err)
	}
	h.sy.OneTimeKeysChanged(alice, "DEV") // as the client API says after an upload
	res := h.full(dev(alice), since[alice])
	if res.OTKCounts["signed_curve25519"] != 2 || !slices.Equal(res.Fallback, []string{"signed_curve25519"}) {
		t.Errorf("key counts %v, fallback %v", res.OTKCounts, res.Fallback)
	}
	if res := h.full(dev(bob), since[bob]); res.OTKCounts == nil || res.Fallback == nil || len(res.OTKCounts) != 0 {
		t.Errorf("bob's empty key counts: %v %v", res.OTKCounts, res.Fallback)
	}
	// A claim lowers the count the next sync reports.
	if _, err := h.db.ClaimOneTimeKey(ctx, alice, "DEV", "signed_curve25519"); err != nil {
		t.Fatal(err)
	}
	h.sy.OneTimeKeysChanged(alice, "DEV")
	if res := h.full(dev(alice), since[alice]); res.OTKCounts["signed_curve25519"] != 1 {
		t.Errorf("after a claim: %v", res.OTKCounts)
	}
}

func TestStreamTokensValidated(t *testing.T) {
	h := newHarness(t)
	h.createRoom(alice)
	cur, _ := syncapi.ParseToken(h.full(dev(alice), "").NextBatch)
	for name, tk := range map[string]syncapi.Token{
		"receipts from the future":    {Room: cur.Room, Receipt: cur.Receipt + 5},
		"to-device from the future":   {Room: cur.Room, ToDevice: cur.ToDevice + 5},
		"device list from the future": {Room: cur.Room, DeviceList: cur.DeviceList + 5},
	} {
		var e matrixError
		if code := h.get(dev(alice), "/_matrix/client/v3/sync", url.Values{"since": {tk.String()}}, &e); code != 400 || e.Code != "M_INVALID_PARAM" {
			t.Errorf("%s: %d %s", name, code, e.Code)
		}
	}
	// Typing and presence restart from the clock with each run: a token
	// ahead of them gets the current state, not an error.
	tk := cur
	tk.Typing, tk.Presence = cur.Typing+1000, cur.Presence+1000
	if code := h.get(dev(alice), "/_matrix/client/v3/sync", url.Values{"since": {tk.String()}}, nil); code != 200 {
		t.Errorf("in-memory streams ahead: %d", code)
	}
}
