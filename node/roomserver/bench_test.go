package roomserver_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/internal/testnet"
	"hearth/node/roomserver"
)

// BenchmarkSend measures sequential local sends into one room: build, sign,
// auth, store and commit each event before the next.
func BenchmarkSend(b *testing.B) {
	h := newHarness(b)
	alice := "@alice:" + server
	room := h.createRoom(gomatrixserverlib.RoomVersionV12, alice)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.rs.Send(context.Background(), room, msg(alice, fmt.Sprint("m", i))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}

// BenchmarkSendParallel measures concurrent sends into one room, where the
// room worker and the storage writer group-commit.
func BenchmarkSendParallel(b *testing.B) {
	h := newHarness(b)
	alice := "@alice:" + server
	room := h.createRoom(gomatrixserverlib.RoomVersionV12, alice)
	var n atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.rs.Send(context.Background(), room, msg(alice, fmt.Sprint("m", n.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}

// checkBenchEvents are n events in a room of version 11 from several
// servers of keys, as a backfill or a join receives them: fields(i, s) is
// the i-th event's, sent by server s, without hashes and signatures.
func checkBenchEvents(b *testing.B, keys *testnet.Net, n int, fields func(i int, s eventSigner) map[string]any) [][]byte {
	var signers []eventSigner
	for i := range 8 {
		signers = append(signers, newEventSigner(keys, fmt.Sprintf("s%d.test", i)))
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	evs := make([][]byte, n)
	for i := range evs {
		s := signers[i%len(signers)]
		f := fields(i, s)
		f["room_id"], f["depth"], f["origin_server_ts"] = "!r:s0.test", i+3, 1700000000000+i
		f["prev_events"] = []string{"$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}
		f["auth_events"] = []string{"$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFH", "$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFI"}
		evs[i] = signEvent(b, verImpl, f, s)
	}
	return evs
}

// benchCheck checks evs over and over as a Checker does, on one
// goroutine, until b.N events are checked.
func benchCheck(b *testing.B, evs [][]byte, verifier gomatrixserverlib.JSONVerifier) {
	b.ResetTimer()
	for i := 0; i < b.N; i += len(evs) {
		for j, c := range roomserver.CheckEvents(context.Background(), gomatrixserverlib.RoomVersionV11, evs[:min(len(evs), b.N-i)], verifier, 1) {
			if c.Refused != "" {
				b.Fatalf("event %d: %s", j, c.Refused)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkCheckEvents checks ~1 KiB messages as a Checker does, on one
// goroutine: what parsing, hashes, signatures and event IDs cost.
func BenchmarkCheckEvents(b *testing.B) {
	keys := testnet.New()
	body := strings.Repeat("lorem ipsum ", 40)
	evs := checkBenchEvents(b, keys, 256, func(_ int, s eventSigner) map[string]any {
		return map[string]any{"type": "m.room.message", "sender": "@u:" + s.name, "content": map[string]any{"body": body, "msgtype": "m.text"}}
	})
	if n := len(evs[0]); n < 900 || n > 1200 {
		b.Fatalf("events are %d bytes, want about 1 KiB", n)
	}
	benchCheck(b, evs, keys.Verifier())
}

// BenchmarkCheckJoins checks join events from several servers as a
// Checker does a room's state when joining it: membership events ask
// more of the check (which servers must have signed them).
func BenchmarkCheckJoins(b *testing.B) {
	keys := testnet.New()
	evs := checkBenchEvents(b, keys, 256, func(i int, s eventSigner) map[string]any {
		user := fmt.Sprintf("@u%d:%s", i, s.name)
		return map[string]any{"type": "m.room.member", "sender": user, "state_key": user,
			"content": map[string]any{"membership": "join", "displayname": fmt.Sprint("User ", i)}}
	})
	benchCheck(b, evs, keys.Verifier())
}

// BenchmarkSign builds and signs a message as a send does: with
// gomatrixserverlib's EventBuilder.Build, and with SignEvent.
func BenchmarkSign(b *testing.B) {
	_, key, _ := ed25519.GenerateKey(nil)
	verImpl := gomatrixserverlib.MustGetRoomVersion(roomserver.StableVersions[0])
	proto := func() *gomatrixserverlib.EventBuilder {
		return verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
			SenderID: "@alice:a.test", RoomID: "!room:a.test", Type: "m.room.message",
			Content:    spec.RawJSON(`{"msgtype":"m.text","body":"hello there, a message of an ordinary length"}`),
			PrevEvents: []string{"$Fnh2CJRVgUp8XUfbnd7FnPqBY_EjqdXYhJc89tDo6lM"},
			AuthEvents: []string{"$Fnh2CJRVgUp8XUfbnd7FnPqBY_EjqdXYhJc89tDo6lA", "$Fnh2CJRVgUp8XUfbnd7FnPqBY_EjqdXYhJc89tDo6lB", "$Fnh2CJRVgUp8XUfbnd7FnPqBY_EjqdXYhJc89tDo6lC"},
			Depth:      42,
		})
	}
	b.Run("Build", func(b *testing.B) {
		for b.Loop() {
			ev, err := proto().Build(time.Now(), "a.test", "ed25519:a", key)
			if err != nil {
				b.Fatal(err)
			}
			ev.EventID()
		}
	})
	b.Run("SignEvent", func(b *testing.B) {
		for b.Loop() {
			if _, err := roomserver.SignEvent(verImpl, proto(), time.Now(), "a.test", "ed25519:a", key); err != nil {
				b.Fatal(err)
			}
		}
	})
}
