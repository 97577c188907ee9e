//go:build js

package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
)

// sampleEvent is a federation PDU of a typical size (about 1 KiB).
const sampleEvent = `{"auth_events":["$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","$bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","$ccccccccccccccccccccccccccccccccccccccccccc"],"content":{"body":"%s","msgtype":"m.text"},"depth":42,"hashes":{"sha256":"dddddddddddddddddddddddddddddddddddddddddd"},"origin_server_ts":1700000000000,"prev_events":["$eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"],"room_id":"!ffffffffffffffffffffffffffffffffffffffffff","sender":"@alice:%s","type":"m.room.message"}`

// verifyBench measures gomatrixserverlib.VerifyJSON (canonical JSON,
// signature stripping, ed25519) and bare ed25519.Verify per second.
func verifyBench(raw json.RawMessage) (any, error) {
	var args struct{ N int }
	if err := decode(raw, &args); err != nil {
		return nil, err
	}
	args.N = max(args.N, 10)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	const name, keyID = "probe.example", gomatrixserverlib.KeyID("ed25519:p2p")
	event := fmt.Sprintf(sampleEvent, strings.Repeat("hello ", 80), name)
	signed, err := gomatrixserverlib.SignJSON(name, keyID, priv, []byte(event))
	if err != nil {
		return nil, err
	}

	msg := []byte(event)
	sig := ed25519.Sign(priv, msg)
	verifyJSON := func() error { return gomatrixserverlib.VerifyJSON(name, keyID, pub, signed) }
	verifyBare := func() error {
		if !ed25519.Verify(pub, msg, sig) {
			return fmt.Errorf("ed25519.Verify failed")
		}
		return nil
	}
	// Warm up for two seconds: the browser compiles hot wasm functions
	// again, optimised, in the background, and only then runs them fast.
	for start := time.Now(); time.Since(start) < 2*time.Second; {
		if err := verifyJSON(); err != nil {
			return nil, err
		}
	}
	jsonRates, err := rounds(5, args.N, verifyJSON)
	if err != nil {
		return nil, fmt.Errorf("VerifyJSON: %w", err)
	}
	bareRates, err := rounds(5, args.N, verifyBare)
	if err != nil {
		return nil, err
	}
	best := func(r []float64) float64 { return slices.Max(r) }
	return map[string]any{
		"n":                    args.N,
		"event_bytes":          len(signed),
		"verify_json_per_s":    best(jsonRates),
		"verify_json_rounds":   jsonRates,
		"ed25519_verify_per_s": best(bareRates),
		"ed25519_rounds":       bareRates,
	}, nil
}

// rounds runs f n times, k times over, and returns each round's rate per
// second.
func rounds(k, n int, f func() error) ([]float64, error) {
	var out []float64
	for range k {
		start := time.Now()
		for range n {
			if err := f(); err != nil {
				return nil, err
			}
		}
		out = append(out, float64(n)/time.Since(start).Seconds())
	}
	return out, nil
}
