package roomserver_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

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

// eventSigner is a server of a test network that signs events made from
// any fields, as no event builder would make them (extra keys, unsigned
// data, odd strings).
type eventSigner struct {
	name string
	priv ed25519.PrivateKey
}

func newEventSigner(keys *testnet.Net, name string) eventSigner {
	pub, priv, _ := ed25519.GenerateKey(nil)
	keys.AddKey(name, pub)
	return eventSigner{name: name, priv: priv}
}

// signEvent adds the content hash of fields and each signer's signature
// of its redacted form, as gomatrixserverlib's builder does, and returns
// the event's JSON.
func signEvent(t testing.TB, verImpl gomatrixserverlib.IRoomVersion, fields map[string]any, by ...eventSigner) []byte {
	t.Helper()
	hashable := maps.Clone(fields)
	for _, k := range []string{"signatures", "unsigned", "hashes"} {
		delete(hashable, k)
	}
	canonical, err := gomatrixserverlib.CanonicalJSON(mustJSON(t, hashable))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(canonical)
	fields = maps.Clone(fields)
	fields["hashes"] = map[string]string{"sha256": spec.Base64Bytes(sum[:]).Encode()}
	redacted, err := verImpl.RedactEventJSON(mustJSON(t, fields))
	if err != nil {
		t.Fatal(err)
	}
	sigs := map[string]any{}
	for _, s := range by {
		signed, err := gomatrixserverlib.SignJSON(s.name, testnet.KeyID, s.priv, redacted)
		if err != nil {
			t.Fatal(err)
		}
		sigs[s.name] = json.RawMessage(gjson.GetBytes(signed, "signatures."+gjson.Escape(s.name)).Raw)
	}
	fields["signatures"] = sigs
	return mustJSON(t, fields)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckedEventIDsAreGomatrixserverlibs checks events of every kind
// and supported room version: the ID CheckEvents gives each, which it
// takes from the hash the verifier hands back, is the ID
// gomatrixserverlib works out; and so it is with verifiers that hand
// back no hash, or hashes that differ.
func TestCheckedEventIDsAreGomatrixserverlibs(t *testing.T) {
	keys := testnet.New()
	a, b := newEventSigner(keys, "a.test"), newEventSigner(keys, "b.test")
	checker := newServer(t, "c.test", keys)
	alice, bob := "@alice:a.test", "@bob:b.test"
	verifiers := map[string]gomatrixserverlib.JSONVerifier{
		"NameVerifier":     keys.Verifier(),
		"no hash":          vouchingVerifier{keys},
		"differing hashes": differingVerifier{keys.Verifier()},
	}
	for _, version := range roomserver.SupportedVersions {
		verImpl := gomatrixserverlib.MustGetRoomVersion(version)
		ts := 1700000000000
		event := func(typ, sender string, stateKey *string, content any) map[string]any {
			ts++
			f := map[string]any{
				"type": typ, "sender": sender, "content": content, "depth": ts - 1699999999990, "origin_server_ts": ts,
				"prev_events": []string{"$bnJCJs7ffzNqpaOH6u0OLUn1X5JMA6TYkrzn-Hd8Ke4"}, "auth_events": []string{"$GVSOmVKPfQEqm6q0rSnNTmKi5dVZJYRH6qXrZqsu4vo"},
			}
			if stateKey != nil {
				f["state_key"] = *stateKey
			}
			return f
		}
		create := event(spec.MRoomCreate, alice, sk(""), map[string]any{"room_version": string(version), "creator": alice})
		create["prev_events"], create["auth_events"] = []string{}, []string{}
		room := "!history:a.test"
		if version == gomatrixserverlib.RoomVersionV12 {
			// The room is named after its create event, which names no room.
			pdu, err := verImpl.NewEventFromUntrustedJSON(signEvent(t, verImpl, create, a))
			if err != nil {
				t.Fatalf("v%s create event: %v", version, err)
			}
			room = "!" + pdu.EventID()[1:]
		} else {
			create["room_id"] = room
		}
		inRoom := func(f map[string]any) map[string]any {
			f["room_id"] = room
			return f
		}
		message := inRoom(event("m.room.message", alice, nil, map[string]any{"msgtype": "m.text", "body": "hello"}))

		type testEvent struct {
			name     string
			json     []byte
			redacted bool
		}
		evs := []testEvent{
			{"create", signEvent(t, verImpl, create, a), false},
			{"message", signEvent(t, verImpl, message, a), false},
			{"message with odd strings and numbers", signEvent(t, verImpl, inRoom(event("m.room.message", alice, nil, map[string]any{
				"msgtype": "m.text", "body": "é ü 😀 <b>&amp;</b> \"quoted\" back\\slash /slash \u2028 \u0001 \t",
				"formatted_body": "<a href=\"https://x.test/?a=1&b=2\">x</a>", "n": []any{0, -1, 9007199254740991, -9007199254740991},
				"nested": map[string]any{"z": map[string]any{}, "a": []any{"", nil, true, false}, "é": "key", "A": 1, "_": 2},
			})), a), false},
			{"room name", signEvent(t, verImpl, inRoom(event(spec.MRoomName, alice, sk(""), map[string]any{"name": "Room ☕"})), a), false},
			{"power levels", signEvent(t, verImpl, inRoom(event(spec.MRoomPowerLevels, alice, sk(""), map[string]any{
				"users": map[string]any{alice: 100, bob: 50}, "events": map[string]any{"m.room.name": 50}, "invite": 0, "ban": 50, "notifications": map[string]any{"room": 50},
			})), a), false},
			{"restricted join rules", signEvent(t, verImpl, inRoom(event(spec.MRoomJoinRules, alice, sk(""), map[string]any{
				"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": "!other:a.test"}},
			})), a), false},
			{"join with display name", signEvent(t, verImpl, inRoom(event(spec.MRoomMember, alice, sk(alice), map[string]any{"membership": "join", "displayname": "Alice", "avatar_url": "mxc://a.test/x"})), a), false},
			{"invite (signed by both servers)", signEvent(t, verImpl, inRoom(event(spec.MRoomMember, alice, sk(bob), map[string]any{"membership": "invite"})), a, b), false},
			{"restricted join (signed by both servers)", signEvent(t, verImpl, inRoom(event(spec.MRoomMember, bob, sk(bob), map[string]any{"membership": "join", "join_authorised_via_users_server": alice})), b, a), false},
			{"leave", signEvent(t, verImpl, inRoom(event(spec.MRoomMember, bob, sk(bob), map[string]any{"membership": "leave", "reason": "bye"})), b), false},
			{"ban", signEvent(t, verImpl, inRoom(event(spec.MRoomMember, alice, sk(bob), map[string]any{"membership": "ban"})), a), false},
			{"redaction", signEvent(t, verImpl, func() map[string]any {
				f := inRoom(event(spec.MRoomRedaction, alice, nil, map[string]any{"redacts": "$GVSOmVKPfQEqm6q0rSnNTmKi5dVZJYRH6qXrZqsu4vo", "reason": "spam"}))
				f["redacts"] = "$GVSOmVKPfQEqm6q0rSnNTmKi5dVZJYRH6qXrZqsu4vo"
				return f
			}(), a), false},
			{"signed extra keys", signEvent(t, verImpl, func() map[string]any {
				f := inRoom(event("m.room.message", alice, nil, map[string]any{"msgtype": "m.text", "body": "extra"}))
				f["origin"], f["membership"], f["x.custom"] = "a.test", "join", map[string]any{"k": []int{1, 2}}
				return f
			}(), a), false},
			{"unsigned data", setKey(t, signEvent(t, verImpl, message, a), "unsigned", map[string]any{"age": 1234, "transaction_id": "txn", "prev_content": map[string]any{"x": 1}}), false},
			{"wire form not canonical", func() []byte {
				js := signEvent(t, verImpl, message, a)
				typ := gjson.GetBytes(js, "type").Raw
				js, err := sjson.DeleteBytes(js, "type")
				if err != nil {
					t.Fatal(err)
				}
				js = append(js[:len(js)-1], []byte(`, "type" : `+typ+"}")...) // after the signatures
				var indented bytes.Buffer
				if err := json.Indent(&indented, js, "", "\t"); err != nil {
					t.Fatal(err)
				}
				return bytes.Replace(indented.Bytes(), []byte(`"hello"`), []byte(`"h\u0065llo"`), 1)
			}(), false},
			{"tampered content (redacted by parsing)", bytes.Replace(signEvent(t, verImpl, message, a), []byte(`"hello"`), []byte(`"HELLO"`), 1), true},
			{"key added after signing (redacted by parsing)", setKey(t, signEvent(t, verImpl, message, a), "x.added", "later"), true},
			{"tampered join (redacted by parsing)", bytes.Replace(signEvent(t, verImpl, inRoom(event(spec.MRoomMember, alice, sk(alice), map[string]any{"membership": "join", "displayname": "Alice"})), a), []byte(`"Alice"`), []byte(`"Eve"`), 1), true},
		}

		var batch [][]byte
		want := make([]string, len(evs))
		for i, ev := range evs {
			pdu, err := verImpl.NewEventFromUntrustedJSON(ev.json)
			if err != nil {
				t.Fatalf("v%s %s: %v", version, ev.name, err)
			}
			want[i] = pdu.EventID()
			batch = append(batch, ev.json)

			// What the verifier hands back is what the ID is the hash of.
			ctx, signed := roomserver.WithSignedHash(context.Background())
			if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, keys.Verifier(), userIDOf); err != nil {
				t.Fatalf("v%s %s: %v", version, ev.name, err)
			}
			if sum, ok := signed.Sum(); !ok || "$"+base64.RawURLEncoding.EncodeToString(sum[:]) != want[i] {
				t.Errorf("v%s %s: NameVerifier handed back %x (%v), the event ID is %s", version, ev.name, sum, ok, want[i])
			}
		}
		for name, verifier := range verifiers {
			for i, c := range roomserver.CheckEvents(context.Background(), version, batch, verifier, 4) {
				if c.Refused != "" || c.EventID != want[i] || c.Redacted != evs[i].redacted {
					t.Errorf("v%s %s with %s: refused %q, ID %s redacted=%v; want ID %s redacted=%v", version, evs[i].name, name, c.Refused, c.EventID, c.Redacted, want[i], evs[i].redacted)
				}
			}
		}
		// And the roomserver's own check (small batches, natively) agrees.
		var in []roomserver.InputEvent
		for _, js := range batch {
			in = append(in, roomserver.InputEvent{Origin: "a.test", RoomVersion: version, JSON: js})
		}
		for i, v := range checker.rs.Verify(context.Background(), in) {
			switch {
			case v.Err != nil:
				t.Errorf("v%s %s verified in process: %v", version, evs[i].name, v.Err)
			case v.PDU().EventID() != want[i] || v.PDU().Redacted() != evs[i].redacted:
				t.Errorf("v%s %s verified in process: ID %s redacted=%v; want ID %s redacted=%v", version, evs[i].name, v.PDU().EventID(), v.PDU().Redacted(), want[i], evs[i].redacted)
			}
		}
	}
}

func userIDOf(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) { return s.ToUserID(), nil }

// setKey sets a top-level key of an event's JSON after it was signed.
func setKey(t *testing.T, js []byte, key string, v any) []byte {
	t.Helper()
	out, err := sjson.SetBytes(js, key, v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// vouchingVerifier checks signatures with gomatrixserverlib.VerifyJSON,
// as a verifier that hands back nothing.
type vouchingVerifier struct{ keys *testnet.Net }

func (v vouchingVerifier) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, req := range reqs {
		key, err := v.keys.KeyOf(string(req.ServerName))
		if err == nil {
			err = gomatrixserverlib.VerifyJSON(string(req.ServerName), testnet.KeyID, key, req.Message)
		}
		out[i].Error = err
	}
	return out, nil
}

// differingVerifier hands back a hash of something else besides what
// its verifier hands back.
type differingVerifier struct{ gomatrixserverlib.JSONVerifier }

func (v differingVerifier) VerifyJSONs(ctx context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	roomserver.RecordSigned(ctx, []byte(`{}`))
	return v.JSONVerifier.VerifyJSONs(ctx, reqs)
}
