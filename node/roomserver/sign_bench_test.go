package roomserver_test

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
)

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
