package roomserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/internal/testnet"
	"hearth/node/roomserver"
)

// threadChecker is a Checker as the browser's: CheckEvents on another
// goroutine, its answers crossing back as bytes (JSON, as postMessage
// would copy them).
type threadChecker struct {
	verifier gomatrixserverlib.JSONVerifier
	calls    atomic.Int64
	broken   bool
}

func (c *threadChecker) Check(ctx context.Context, version gomatrixserverlib.RoomVersion, events [][]byte) ([]roomserver.Checked, error) {
	c.calls.Add(1)
	if c.broken {
		return nil, errors.New("no worker")
	}
	done := make(chan []byte)
	go func() {
		b, _ := json.Marshal(roomserver.CheckEvents(ctx, version, events, c.verifier, 4))
		done <- b
	}()
	var out []roomserver.Checked
	err := json.Unmarshal(<-done, &out)
	return out, err
}

// TestCheckerAcceptsAndRefusesAsVerify checks a batch of good and bad
// events through a Checker, through one that fails, and in process: each
// event is accepted or refused alike, with the same ID and JSON.
func TestCheckerAcceptsAndRefusesAsVerify(t *testing.T) {
	ctx := context.Background()
	keys := testnet.New()
	a, _, room := publicRoom(t, keys)
	evil := newServer(t, "evil.test", keys)
	alice := "@alice:a.test"
	head, _ := a.rs.CurrentState(ctx, room)
	var auth []string
	for _, e := range head {
		auth = append(auth, e.EventID())
	}
	prev, depth := a.extremities(t, room)

	var in []roomserver.InputEvent
	want := map[int]string{} // index → how it must be refused
	add := func(js []byte, refused string) {
		if refused != "" {
			want[len(in)] = refused
		}
		in = append(in, roomserver.InputEvent{Origin: "a.test", JSON: js})
	}
	for i := range 20 {
		add(a.build(t, room, msg(alice, fmt.Sprintf("m%d", i)), prev, depth+1, auth, time.Now()).JSON(), "")
	}
	add(evil.build(t, room, msg(alice, "forged"), prev, depth+1, auth, time.Now()).JSON(), "bad")
	tampered := string(a.build(t, room, msg(alice, "original"), prev, depth+1, auth, time.Now()).JSON())
	add([]byte(strings.Replace(tampered, "original", "tampered", 1)), "") // accepted redacted
	add([]byte(`{"room_id":"`+room+`","type":`), "bad")
	add([]byte(`{"room_id":"!nowhere:a.test","type":"m.room.message"}`), "unknown room")
	add([]byte(`{"room_id":"`+room+`","pad":"`+strings.Repeat("x", roomserver.MaxEventSize)+`"}`), "too large")
	in[len(in)-1].RoomVersion = gomatrixserverlib.RoomVersionV11

	here := a.rs.Verify(ctx, in)
	checker := &threadChecker{verifier: keys.Verifier()}
	a.checker = checker
	a.reopen()
	elsewhere := a.rs.Verify(ctx, in)
	if checker.calls.Load() != 1 {
		t.Fatalf("the checker was called %d times for %d events", checker.calls.Load(), len(in))
	}
	checker.broken = true
	fallback := a.rs.Verify(ctx, in)
	if checker.calls.Load() != 2 {
		t.Fatalf("the broken checker was not tried")
	}

	for i := range in {
		for name, got := range map[string]roomserver.Verified{"checker": elsewhere[i], "fallback": fallback[i]} {
			h := here[i]
			if (h.Err == nil) != (got.Err == nil) {
				t.Errorf("event %d via %s: err %v, in process %v", i, name, got.Err, h.Err)
				continue
			}
			if h.Err != nil {
				if errors.Is(h.Err, roomserver.ErrTooLarge) != errors.Is(got.Err, roomserver.ErrTooLarge) ||
					errors.Is(h.Err, roomserver.ErrRoomNotFound) != errors.Is(got.Err, roomserver.ErrRoomNotFound) {
					t.Errorf("event %d via %s: err %v, in process %v", i, name, got.Err, h.Err)
				}
				continue
			}
			if got.PDU().EventID() != h.PDU().EventID() || !bytes.Equal(got.PDU().JSON(), h.PDU().JSON()) || got.PDU().Redacted() != h.PDU().Redacted() {
				t.Errorf("event %d via %s: %s redacted=%v, in process %s redacted=%v", i, name, got.PDU().EventID(), got.PDU().Redacted(), h.PDU().EventID(), h.PDU().Redacted())
			}
		}
		if _, bad := want[i]; bad != (here[i].Err != nil) {
			t.Errorf("event %d: want refused=%v (%s), got %v", i, bad, want[i], here[i].Err)
		}
	}
	if !here[21].PDU().Redacted() {
		t.Error("the tampered event is not redacted")
	}
	if !errors.Is(here[24].Err, roomserver.ErrTooLarge) {
		t.Errorf("the large event: %v", here[24].Err)
	}

	// What the checker accepted is stored like anything else.
	for i, r := range a.rs.InputVerified(ctx, elsewhere) {
		if _, bad := want[i]; !bad && (r.Err != nil || r.EventID != here[i].PDU().EventID()) {
			t.Errorf("storing checked event %d: %+v", i, r)
		}
	}
	if ev, err := a.rs.Event(ctx, here[0].PDU().EventID()); err != nil || string(ev.Content()) != string(here[0].PDU().Content()) {
		t.Errorf("a checked event is not served: %v", err)
	}
}
