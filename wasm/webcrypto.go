//go:build js

package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall/js"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/roomserver"
	"hearth/wasm/jscall"
)

// webCryptoVerifier is roomserver.NameVerifier with the ed25519 check done
// by the browser's WebCrypto (crypto.subtle, "Ed25519"), faster than Go's
// in wasm (a 1,000-event backfill: 3.6–4.3 s against 4.5–5.3 s) and off
// the Go thread: the calling goroutine waits for the promise while the
// event loop, and so other goroutines, go on. So callers should verify
// many messages at once (node.Config.VerifyWidth).
// Never call it from inside a js.FuncOf callback (see jscall.Await).
type webCryptoVerifier struct {
	keyID  gomatrixserverlib.KeyID
	keyOf  func(serverName string) (ed25519.PublicKey, error)
	subtle js.Value
	algo   js.Value // {name: "Ed25519"}

	mu   sync.Mutex
	keys map[string]*cryptoKey // by server name
}

// cryptoKey is a server's key imported into WebCrypto; done is closed once
// key or err is set, so concurrent first uses import it once.
type cryptoKey struct {
	done chan struct{}
	key  js.Value
	err  error
}

// webCryptoWidth is how many events the node verifies at once with
// WebCrypto: enough that its threads stay busy while Go parses the next.
const webCryptoWidth = 32

// maxCryptoKeys bounds the imported keys: server names come from peers.
const maxCryptoKeys = 4096

// newVerifier returns the WebCrypto verifier if this browser verifies
// Ed25519 correctly, else (logging why, once) Go's NameVerifier, with how
// many events to verify at once (node.Config.VerifyWidth: 0 for Go's, one
// per core). Call it from a goroutine, not a js.FuncOf callback: it waits
// for WebCrypto.
func newVerifier(keyID string, keyOf func(string) (ed25519.PublicKey, error), log *slog.Logger) (gomatrixserverlib.JSONVerifier, int) {
	v, err := newWebCryptoVerifier(keyID, keyOf)
	if err == nil {
		err = v.probe()
	}
	if err != nil {
		log.Warn("WebCrypto Ed25519 is not usable: verifying signatures in Go (slower)", "err", err)
		return roomserver.NameVerifier{KeyID: gomatrixserverlib.KeyID(keyID), KeyOf: keyOf}, 0
	}
	return v, webCryptoWidth
}

func newWebCryptoVerifier(keyID string, keyOf func(string) (ed25519.PublicKey, error)) (*webCryptoVerifier, error) {
	crypto := js.Global().Get("crypto")
	if crypto.Type() != js.TypeObject || crypto.Get("subtle").Type() != js.TypeObject {
		// crypto.subtle exists only in secure contexts
		return nil, errors.New("no crypto.subtle")
	}
	algo := js.Global().Get("Object").New()
	algo.Set("name", "Ed25519")
	return &webCryptoVerifier{
		keyID:  gomatrixserverlib.KeyID(keyID),
		keyOf:  keyOf,
		subtle: crypto.Get("subtle"),
		algo:   algo,
		keys:   map[string]*cryptoKey{},
	}, nil
}

// probe checks that WebCrypto imports an Ed25519 key and tells a good
// signature from a bad one (a browser without Ed25519 rejects with
// NotSupportedError).
func (v *webCryptoVerifier) probe() error {
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	key, err := v.importKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	msg := []byte("hearth webcrypto probe")
	sig := ed25519.Sign(priv, msg)
	if ok, err := v.verify(key, sig, msg); err != nil || !ok {
		return fmt.Errorf("probe: a good signature verified %v (%v)", ok, err)
	}
	msg[0] ^= 1
	if ok, err := v.verify(key, sig, msg); err != nil || ok {
		return fmt.Errorf("probe: a bad signature verified %v (%v)", ok, err)
	}
	return nil
}

// VerifyJSONs implements gomatrixserverlib.JSONVerifier, checking what
// gomatrixserverlib.VerifyJSON checks (its errors in lower case) and
// handing back what it verified (roomserver.RecordSigned). Every
// request's verification is started before the first is waited for.
func (v *webCryptoVerifier) VerifyJSONs(ctx context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	pending := make([]js.Value, len(reqs)) // promises of verify
	for i, req := range reqs {
		pending[i], out[i].Error = v.start(ctx, req)
	}
	for i, p := range pending {
		if out[i].Error != nil {
			continue
		}
		ok, err := jscall.Await(p)
		switch {
		case err != nil:
			out[i].Error = fmt.Errorf("WebCrypto verify for %q: %w", reqs[i].ServerName, err)
		case !ok.Bool():
			out[i].Error = fmt.Errorf("bad signature from %q with ID %q", reqs[i].ServerName, v.keyID)
		}
	}
	return out, nil
}

// start does in Go what VerifyJSON does before the ed25519 check and
// hands that check to WebCrypto, returning its promise.
func (v *webCryptoVerifier) start(ctx context.Context, req gomatrixserverlib.VerifyJSONRequest) (js.Value, error) {
	name := string(req.ServerName)
	sig, canonical, err := roomserver.SignedBytes(name, v.keyID, req.Message)
	if err != nil {
		return js.Value{}, err
	}
	roomserver.RecordSigned(ctx, canonical)
	key, err := v.key(name)
	if err != nil {
		return js.Value{}, err
	}
	return v.call("verify", v.algo, key, bytesToJS(sig), bytesToJS(canonical))
}

// key is the server's key as a WebCrypto CryptoKey, imported on first use.
func (v *webCryptoVerifier) key(serverName string) (js.Value, error) {
	v.mu.Lock()
	k, ok := v.keys[serverName]
	if !ok {
		if len(v.keys) >= maxCryptoKeys {
			clear(v.keys)
		}
		k = &cryptoKey{done: make(chan struct{})}
		v.keys[serverName] = k
	}
	v.mu.Unlock()
	if ok {
		<-k.done
		return k.key, k.err
	}
	pub, err := v.keyOf(serverName)
	if err != nil {
		k.err = fmt.Errorf("key of %s: %w", serverName, err)
	} else if k.key, err = v.importKey(pub); err != nil {
		k.err = fmt.Errorf("key of %s: WebCrypto import: %w", serverName, err)
	}
	close(k.done)
	if k.err != nil { // asked again, it is tried again
		v.mu.Lock()
		if v.keys[serverName] == k {
			delete(v.keys, serverName)
		}
		v.mu.Unlock()
	}
	return k.key, k.err
}

func (v *webCryptoVerifier) importKey(pub ed25519.PublicKey) (js.Value, error) {
	usages := js.Global().Get("Array").New("verify")
	p, err := v.call("importKey", "raw", bytesToJS(pub), v.algo, false, usages)
	if err != nil {
		return js.Value{}, err
	}
	return jscall.Await(p)
}

// verify checks one signature and waits for the answer.
func (v *webCryptoVerifier) verify(key js.Value, sig, msg []byte) (bool, error) {
	p, err := v.call("verify", v.algo, key, bytesToJS(sig), bytesToJS(msg))
	if err != nil {
		return false, err
	}
	ok, err := jscall.Await(p)
	if err != nil {
		return false, err
	}
	return ok.Bool(), nil
}

// call runs crypto.subtle[method](args...).
func (v *webCryptoVerifier) call(method string, args ...any) (js.Value, error) {
	return jscall.Call(v.subtle, method, args...)
}
