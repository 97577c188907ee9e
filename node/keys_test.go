package node_test

import (
	"bytes"
	"encoding/json"
	"testing"
)

// A user's device and one-time keys reach a user of another server
// exactly as uploaded (signatures are checked over the exact objects),
// each one-time key is claimed once, and a server that cannot be reached
// is listed in failures rather than failing the request; the owner's sync
// counts its one-time keys down.
func TestKeysQueryAndClaimAcrossServers(t *testing.T) {
	n := newNetwork(t)
	a, b := n.add(), n.add()
	alice, bob := a.register(t, "alice"), b.register(t, "bob")

	deviceKeys := json.RawMessage(`{"user_id":"` + alice.ID + `","device_id":"` + alice.Device + `",` +
		`"algorithms":["m.olm.v1.curve25519-aes-sha2","m.megolm.v1.aes-sha2"],` +
		`"keys":{"curve25519:` + alice.Device + `":"Y3VydmU","ed25519:` + alice.Device + `":"ZWQyNTUxOQ"},` +
		`"signatures":{"` + alice.ID + `":{"ed25519:` + alice.Device + `":"c2lnbmF0dXJl"}},"x_extra":{"kept":true}}`)
	alice.Do("POST", "/keys/upload", map[string]any{
		"device_keys": deviceKeys,
		"one_time_keys": map[string]any{
			"signed_curve25519:AAAAAQ": map[string]any{"key": "b3RrMQ", "signatures": map[string]any{}},
		},
	}, nil)

	var q struct {
		DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
		Failures   map[string]json.RawMessage            `json:"failures"`
	}
	bob.Do("POST", "/keys/query", map[string]any{"device_keys": map[string][]string{
		alice.ID:                      {},
		"@nobody:unreachable.example": {},
	}}, &q)
	got := q.DeviceKeys[alice.ID][alice.Device]
	var want, have any
	json.Unmarshal(deviceKeys, &want)
	if err := json.Unmarshal(got, &have); err != nil {
		t.Fatalf("alice's device keys as bob sees them: %s", got)
	}
	if w, h := canon(t, want), canon(t, have); !bytes.Equal(w, h) {
		t.Fatalf("device keys changed on the way:\nuploaded %s\nreceived %s", w, h)
	}
	if _, ok := q.Failures["unreachable.example"]; !ok || len(q.Failures) != 1 {
		t.Fatalf("failures: %v", q.Failures)
	}

	otkCount := func() int {
		var res struct {
			Counts map[string]int `json:"device_one_time_keys_count"`
		}
		alice.Do("GET", "/sync?timeout=0", nil, &res)
		return res.Counts["signed_curve25519"]
	}
	if n := otkCount(); n != 1 {
		t.Fatalf("alice's sync counts %d one-time keys before the claim, want 1", n)
	}

	claim := func() map[string]json.RawMessage {
		var c struct {
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		}
		bob.Do("POST", "/keys/claim", map[string]any{"one_time_keys": map[string]any{
			alice.ID: map[string]string{alice.Device: "signed_curve25519"},
		}}, &c)
		return c.OneTimeKeys[alice.ID][alice.Device]
	}
	first := claim()
	if k, ok := first["signed_curve25519:AAAAAQ"]; !ok || !bytes.Contains(k, []byte("b3RrMQ")) {
		t.Fatalf("first claim: %v", first)
	}
	if again := claim(); len(again) != 0 {
		t.Fatalf("a one-time key was handed out twice: %v", again)
	}
	// Alice's device learns its key was used, so it uploads more.
	if n := otkCount(); n != 0 {
		t.Fatalf("alice's sync counts %d one-time keys after bob claimed the only one", n)
	}
}

func canon(t *testing.T, v any) []byte {
	b, err := json.Marshal(v) // map keys sorted
	if err != nil {
		t.Fatal(err)
	}
	return b
}
