package syncapi_test

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"testing"

	"hearth/node/httputil"
	"hearth/node/roomserver"
)

// A room's cost in a sliding sync answer: with required_state naming
// keys (not a wildcard), a 1,000-member room should cost about what a
// 2-member one does (counts and heroes come from the memberships index).
func BenchmarkSlidingRoomSize(b *testing.B) {
	for _, members := range []int{2, 1000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			h := newHarness(b)
			room := h.createRoom(alice)
			// No name: heroes name the room.
			h.send(room, state(alice, "m.room.name", "", map[string]string{}))
			for i := 1; i < members; {
				var evs []roomserver.NewEvent
				for ; i < members && len(evs) < 100; i++ {
					u := fmt.Sprintf("@u%04d:%s", i, server)
					evs = append(evs, member(u, u, "join"))
				}
				h.send(room, evs...)
			}
			h.fill(room, alice, 20)
			body := []byte(`{"room_subscriptions":{"` + room + `":{"timeline_limit":10,
				"required_state":[["m.room.member","$LAZY"],["m.room.create",""],["m.room.member","$ME"]]}}}`)
			call := func() {
				req := httptest.NewRequest("POST", slidingPath, bytes.NewReader(body))
				req = req.WithContext(httputil.WithDevice(req.Context(), &httputil.Device{UserID: alice, DeviceID: "DEV"}))
				rec := httptest.NewRecorder()
				h.sy.HandleSlidingSync(rec, req)
				if rec.Code != 200 || !bytes.Contains(rec.Body.Bytes(), []byte(fmt.Sprintf(`"joined_count":%d`, members))) {
					b.Fatalf("%d %.300s", rec.Code, rec.Body.Bytes())
				}
			}
			call() // warm the event cache, as a live node is
			b.ResetTimer()
			for b.Loop() {
				call()
			}
		})
	}
}
