//go:build js

package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall/js"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
	"hearth/p2p/identity"
)

// signer is a Hearth server: its name is its key.
type signer struct {
	name string
	priv ed25519.PrivateKey
}

func newSigner(t testing.TB, seed byte) signer {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	id, err := identity.New(ed25519.NewKeyFromSeed(s))
	if err != nil {
		t.Fatal(err)
	}
	return signer{name: id.ServerName, priv: id.Private}
}

func (s signer) sign(t testing.TB, signingName string, keyID gomatrixserverlib.KeyID, msg string) []byte {
	t.Helper()
	out, err := gomatrixserverlib.SignJSON(signingName, keyID, s.priv, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// edit decodes a JSON object, changes it and encodes it again.
func edit(t testing.TB, msg []byte, f func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newTestVerifier(t testing.TB) gomatrixserverlib.JSONVerifier {
	t.Helper()
	v, _ := newVerifier(identity.KeyID, identity.PublicKeyOf, slog.Default())
	if _, ok := v.(*webCryptoVerifier); !ok {
		t.Fatalf("WebCrypto Ed25519 not used: got %T", v)
	}
	return v
}

type verifyCase struct {
	name   string
	server string
	msg    []byte
	valid  bool
}

func verifyCases(t testing.TB) []verifyCase {
	a, b := newSigner(t, 1), newSigner(t, 2)
	const body = `{"type":"m.room.message","content":{"body":"hello","msgtype":"m.text"},"origin_server_ts":1,"unsigned":{"age":3}}`
	good := a.sign(t, a.name, identity.KeyID, body)
	reordered := edit(t, good, func(map[string]any) {}) // keys sorted, spacing changed: the same canonical JSON
	return []verifyCase{
		{"valid", a.name, good, true},
		{"valid after re-encoding", a.name, reordered, true},
		{"tampered content", a.name, edit(t, good, func(m map[string]any) {
			m["content"].(map[string]any)["body"] = "hellO"
		}), false},
		{"tampered unsigned", a.name, edit(t, good, func(m map[string]any) {
			m["unsigned"] = map[string]any{"age": 99, "extra": true}
		}), true},
		{"signed by another key", a.name, b.sign(t, a.name, identity.KeyID, body), false},
		{"signed by the other server, asked for its own", b.name, a.sign(t, b.name, identity.KeyID, body), false},
		{"no signatures", a.name, []byte(body), false},
		{"no entry for the server", a.name, b.sign(t, b.name, identity.KeyID, body), false},
		{"no entry for the key ID", a.name, a.sign(t, a.name, "ed25519:other", body), false},
		{"malformed base64", a.name, edit(t, good, func(m map[string]any) {
			m["signatures"] = map[string]any{a.name: map[string]any{identity.KeyID: "!!not base64!!"}}
		}), false},
		{"short signature", a.name, edit(t, good, func(m map[string]any) {
			m["signatures"] = map[string]any{a.name: map[string]any{identity.KeyID: "AAAA"}}
		}), false},
		{"signatures not an object", a.name, edit(t, good, func(m map[string]any) { m["signatures"] = 7 }), false},
		{"signature not a string", a.name, edit(t, good, func(m map[string]any) {
			m["signatures"] = map[string]any{a.name: map[string]any{identity.KeyID: 7}}
		}), false},
		// Repeated keys: the last counts, for either verifier.
		{"a bad signature repeated after the good one", a.name, repeatKey(good, a.name, "AAAA"), false},
		{"the good signature repeated after a bad one", a.name, repeatKey(repeatKey(good, a.name, "AAAA"), a.name, signatureOf(t, good, a.name)), true},
		{"not JSON", a.name, []byte("not json"), false},
		{"not an object", a.name, []byte(`[1,2]`), false},
		{"server name that is not a key", "example.org", good, false},
	}
}

// The WebCrypto verifier accepts and refuses exactly what
// gomatrixserverlib.VerifyJSON does.
func TestWebCryptoVerifierAgreesWithVerifyJSON(t *testing.T) {
	v := newTestVerifier(t)
	for _, c := range verifyCases(t) {
		t.Run(c.name, func(t *testing.T) {
			var goErr error
			if key, err := identity.PublicKeyOf(c.server); err != nil {
				goErr = err
			} else {
				goErr = gomatrixserverlib.VerifyJSON(c.server, identity.KeyID, key, c.msg)
			}
			res, err := v.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{ServerName: spec.ServerName(c.server), Message: c.msg}})
			if err != nil || len(res) != 1 {
				t.Fatalf("VerifyJSONs: %v, %d results", err, len(res))
			}
			if (goErr == nil) != c.valid {
				t.Errorf("VerifyJSON: %v, want valid=%v", goErr, c.valid)
			}
			if (res[0].Error == nil) != c.valid {
				t.Errorf("WebCrypto: %v, want valid=%v", res[0].Error, c.valid)
			}
		})
	}
}

// A batch is answered in order, each request on its own, also when many
// goroutines verify at once with keys not imported yet.
func TestWebCryptoVerifierBatchesInOrder(t *testing.T) {
	v := newTestVerifier(t)
	cases := verifyCases(t)
	var reqs []gomatrixserverlib.VerifyJSONRequest
	var want []bool
	for i := range 200 {
		c := cases[(i*7)%len(cases)]
		reqs = append(reqs, gomatrixserverlib.VerifyJSONRequest{ServerName: spec.ServerName(c.server), Message: c.msg})
		want = append(want, c.valid)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := v.VerifyJSONs(context.Background(), reqs)
			if err != nil || len(res) != len(reqs) {
				t.Errorf("VerifyJSONs: %v, %d results for %d", err, len(res), len(reqs))
				return
			}
			for i, r := range res {
				if (r.Error == nil) != want[i] {
					t.Errorf("request %d: %v, want valid=%v", i, r.Error, want[i])
				}
			}
		}()
	}
	wg.Wait()
}

// Where WebCrypto has no Ed25519, signatures are checked in Go (and the
// log says so), still refusing bad ones.
func TestVerifierFallsBackToGoWithoutWebCryptoEd25519(t *testing.T) {
	object := js.Global().Get("Object")
	saved := object.Call("getOwnPropertyDescriptor", js.Global(), "crypto")
	t.Cleanup(func() { object.Call("defineProperty", js.Global(), "crypto", saved) })
	unsupported := js.FuncOf(func(js.Value, []js.Value) any {
		return js.Global().Get("Promise").Call("reject", js.Global().Get("DOMException").New("Unrecognized algorithm name", "NotSupportedError"))
	})
	defer unsupported.Release()
	subtle := object.New()
	subtle.Set("importKey", unsupported)
	subtle.Set("verify", unsupported)
	fake := object.New()
	fake.Set("subtle", subtle)
	desc := object.New()
	desc.Set("value", fake)
	desc.Set("configurable", true)
	object.Call("defineProperty", js.Global(), "crypto", desc)

	var logged strings.Builder
	v, _ := newVerifier(identity.KeyID, identity.PublicKeyOf, slog.New(slog.NewTextHandler(&logged, nil)))
	if _, ok := v.(roomserver.NameVerifier); !ok {
		t.Fatalf("got %T, want roomserver.NameVerifier", v)
	}
	if !strings.Contains(logged.String(), "NotSupportedError") {
		t.Errorf("log does not say why: %q", logged.String())
	}
	for _, c := range verifyCases(t) {
		res, err := v.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{ServerName: spec.ServerName(c.server), Message: c.msg}})
		if err != nil || (res[0].Error == nil) != c.valid {
			t.Errorf("%s: %v %v, want valid=%v", c.name, err, res[0].Error, c.valid)
		}
	}
}

// An event from another server is refused for a bad signature as the
// roomserver checks it (VerifyEventSignatures), and accepted when signed.
func TestWebCryptoVerifierChecksEvents(t *testing.T) {
	v := newTestVerifier(t)
	a, b := newSigner(t, 1), newSigner(t, 2)
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	build := func(by signer) []byte {
		proto := gomatrixserverlib.ProtoEvent{
			SenderID: "@u:" + a.name, RoomID: "!r:" + a.name, Type: "m.room.message",
			Content: spec.RawJSON(`{"body":"hi","msgtype":"m.text"}`), Depth: 3,
			PrevEvents: []string{}, AuthEvents: []string{},
		}
		pdu, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), spec.ServerName(a.name), identity.KeyID, by.priv)
		if err != nil {
			t.Fatal(err)
		}
		return pdu.JSON()
	}
	good := build(a)
	userIDForSender := func(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) { return s.ToUserID(), nil }
	for _, c := range []struct {
		name  string
		json  []byte
		valid bool
	}{
		{"signed by the sender's server", good, true},
		{"signed by another key", build(b), false},
		{"depth changed", edit(t, good, func(m map[string]any) { m["depth"] = 4 }), false},
	} {
		pdu, err := verImpl.NewEventFromUntrustedJSON(c.json)
		if err != nil {
			t.Fatal(err)
		}
		err = gomatrixserverlib.VerifyEventSignatures(context.Background(), pdu, v, userIDForSender)
		if (err == nil) != c.valid {
			t.Errorf("%s: %v, want valid=%v", c.name, err, c.valid)
		}
	}
}

// BenchmarkVerify checks the signatures of ~1 KiB events from several
// servers as the roomserver does (VerifyEventSignatures, width events at
// once), with Go's ed25519 and with WebCrypto's.
func BenchmarkVerify(b *testing.B) {
	var signers []signer
	for i := range 8 {
		signers = append(signers, newSigner(b, byte(i+1)))
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	body := strings.Repeat("lorem ipsum ", 25)
	evs := make([]gomatrixserverlib.PDU, 256)
	for i := range evs {
		s := signers[i%len(signers)]
		proto := gomatrixserverlib.ProtoEvent{
			SenderID: "@u:" + s.name, RoomID: "!r:" + signers[0].name, Type: "m.room.message",
			Content: spec.RawJSON(fmt.Sprintf(`{"body":%q,"msgtype":"m.text"}`, body)), Depth: int64(i + 3),
			PrevEvents: []string{"$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"},
			AuthEvents: []string{"$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFH", "$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFI"},
		}
		built, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), spec.ServerName(s.name), identity.KeyID, s.priv)
		if err != nil {
			b.Fatal(err)
		}
		if evs[i], err = verImpl.NewEventFromUntrustedJSON(built.JSON()); err != nil {
			b.Fatal(err)
		}
	}
	if n := len(evs[0].JSON()); n < 900 || n > 1200 {
		b.Fatalf("events are %d bytes, want about 1 KiB", n)
	}
	userIDForSender := func(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) { return s.ToUserID(), nil }
	for _, bc := range []struct {
		name  string
		v     gomatrixserverlib.JSONVerifier
		width int
	}{
		{"go/width=32", roomserver.NameVerifier{KeyID: identity.KeyID, KeyOf: identity.PublicKeyOf}, 32},
		{"webcrypto/width=1", newTestVerifier(b), 1},
		{"webcrypto/width=32", newTestVerifier(b), 32},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range bc.width {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := int(next.Add(1) - 1); i < b.N; i = int(next.Add(1) - 1) {
						if err := gomatrixserverlib.VerifyEventSignatures(context.Background(), evs[i%len(evs)], bc.v, userIDForSender); err != nil {
							b.Errorf("event %d: %v", i, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
		})
	}
}

// repeatKey appends a second entry for server's key ID to the signatures
// of msg (JSON with a repeated key: encoding/json keeps the last).
func repeatKey(msg []byte, server, sig string) []byte {
	entry := fmt.Sprintf(`%q:%q`, identity.KeyID, sig)
	i := bytes.Index(msg, []byte(fmt.Sprintf(`%q:{`, server)))
	if i < 0 {
		panic("no signatures of " + server)
	}
	at := bytes.IndexByte(msg[i:], '}') + i
	return slices.Concat(msg[:at], []byte(","+entry), msg[at:])
}

// signatureOf is server's signature in msg.
func signatureOf(t testing.TB, msg []byte, server string) string {
	var m struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(msg, &m); err != nil {
		t.Fatal(err)
	}
	return m.Signatures[server][identity.KeyID]
}
