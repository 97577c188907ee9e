//go:build js

package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall/js"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
	"hearth/node/roomserver/sigcases"
	"hearth/p2p/identity"
)

// newSigner is a Hearth server: its name is its key.
func newSigner(t testing.TB, seed byte) sigcases.Signer {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	id, err := identity.New(ed25519.NewKeyFromSeed(s))
	if err != nil {
		t.Fatal(err)
	}
	return sigcases.Signer{Name: id.ServerName, Priv: id.Private}
}

func verifyCases(t testing.TB) []sigcases.Case {
	return sigcases.Cases(t, newSigner(t, 1), newSigner(t, 2), identity.KeyID, "example.org")
}

func newTestVerifier(t testing.TB) gomatrixserverlib.JSONVerifier {
	t.Helper()
	v, _ := newVerifier(identity.KeyID, identity.PublicKeyOf, slog.Default())
	if _, ok := v.(*webCryptoVerifier); !ok {
		t.Fatalf("WebCrypto Ed25519 not used: got %T", v)
	}
	return v
}

// The WebCrypto verifier accepts and refuses exactly what
// gomatrixserverlib.VerifyJSON does.
func TestWebCryptoVerifierAgreesWithVerifyJSON(t *testing.T) {
	sigcases.Agree(t, newTestVerifier(t), identity.KeyID, identity.PublicKeyOf, verifyCases(t))
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
		reqs = append(reqs, gomatrixserverlib.VerifyJSONRequest{ServerName: spec.ServerName(c.Server), Message: c.Msg})
		want = append(want, c.Valid)
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
		res, err := v.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{ServerName: spec.ServerName(c.Server), Message: c.Msg}})
		if err != nil || (res[0].Error == nil) != c.Valid {
			t.Errorf("%s: %v %v, want valid=%v", c.Name, err, res[0].Error, c.Valid)
		}
	}
}

// An event from another server is refused for a bad signature as the
// roomserver checks it (VerifyEventSignatures), and accepted when signed.
func TestWebCryptoVerifierChecksEvents(t *testing.T) {
	v := newTestVerifier(t)
	a, b := newSigner(t, 1), newSigner(t, 2)
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	build := func(by sigcases.Signer) []byte {
		proto := gomatrixserverlib.ProtoEvent{
			SenderID: "@u:" + a.Name, RoomID: "!r:" + a.Name, Type: "m.room.message",
			Content: spec.RawJSON(`{"body":"hi","msgtype":"m.text"}`), Depth: 3,
			PrevEvents: []string{}, AuthEvents: []string{},
		}
		pdu, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), spec.ServerName(a.Name), identity.KeyID, by.Priv)
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
		{"depth changed", sigcases.Edit(t, good, func(m map[string]any) { m["depth"] = 4 }), false},
		{"content changed (redacted by parsing)", sigcases.Edit(t, good, func(m map[string]any) { m["content"] = map[string]any{"body": "bye"} }), true},
		{"unsigned added", sigcases.Edit(t, good, func(m map[string]any) { m["unsigned"] = map[string]any{"age": 5} }), true},
	} {
		pdu, err := verImpl.NewEventFromUntrustedJSON(c.json)
		if err != nil {
			t.Fatal(err)
		}
		ctx, signed := roomserver.WithSignedHash(context.Background())
		err = gomatrixserverlib.VerifyEventSignatures(ctx, pdu, v, userIDForSender)
		if (err == nil) != c.valid {
			t.Errorf("%s: %v, want valid=%v", c.name, err, c.valid)
		}
		// What it hands back is what the event's ID is the hash of.
		if sum, ok := signed.Sum(); c.valid && (!ok || "$"+base64.RawURLEncoding.EncodeToString(sum[:]) != pdu.EventID()) {
			t.Errorf("%s: handed back %x (%v), the event ID is %s", c.name, sum, ok, pdu.EventID())
		}
		if checked := roomserver.CheckEvents(context.Background(), verImpl.Version(), [][]byte{c.json}, v, 1)[0]; c.valid && checked.EventID != pdu.EventID() {
			t.Errorf("%s: checked as %s (%q), the event ID is %s", c.name, checked.EventID, checked.Refused, pdu.EventID())
		}
	}
}

// benchEvents are n ~1 KiB messages of room version 11 from several
// servers, parsed as the roomserver parses them.
func benchEvents(b *testing.B, n int) []gomatrixserverlib.PDU {
	var signers []sigcases.Signer
	for i := range 8 {
		signers = append(signers, newSigner(b, byte(i+1)))
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	body := strings.Repeat("lorem ipsum ", 25)
	evs := make([]gomatrixserverlib.PDU, n)
	for i := range evs {
		s := signers[i%len(signers)]
		proto := gomatrixserverlib.ProtoEvent{
			SenderID: "@u:" + s.Name, RoomID: "!r:" + signers[0].Name, Type: "m.room.message",
			Content: spec.RawJSON(fmt.Sprintf(`{"body":%q,"msgtype":"m.text"}`, body)), Depth: int64(i + 3),
			PrevEvents: []string{"$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"},
			AuthEvents: []string{"$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFH", "$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFI"},
		}
		built, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), spec.ServerName(s.Name), identity.KeyID, s.Priv)
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
	return evs
}

// BenchmarkVerify checks the signatures of ~1 KiB events from several
// servers as the roomserver does (VerifyEventSignatures, width events at
// once), with Go's ed25519 and with WebCrypto's.
func BenchmarkVerify(b *testing.B) {
	evs := benchEvents(b, 256)
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

// BenchmarkCheckEvents checks batches of ~1 KiB events as a check
// worker does (roomserver.CheckEvents with WebCrypto, webCryptoWidth at
// once): parsing, hashes, signatures and event IDs.
func BenchmarkCheckEvents(b *testing.B) {
	evs := benchEvents(b, 256)
	batch, ids := make([][]byte, len(evs)), make([]string, len(evs))
	for i, ev := range evs {
		batch[i], ids[i] = ev.JSON(), ev.EventID()
	}
	v := newTestVerifier(b)
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		for j, c := range roomserver.CheckEvents(context.Background(), gomatrixserverlib.RoomVersionV11, batch[:min(len(batch), b.N-i)], v, webCryptoWidth) {
			if c.Refused != "" || c.EventID != ids[j] {
				b.Fatalf("event %d: %q %s, want %s", j, c.Refused, c.EventID, ids[j])
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
