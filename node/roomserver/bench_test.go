package roomserver_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
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
