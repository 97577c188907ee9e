// Package sigcases is a test fixture: signed JSON messages, good and
// hostile, with whether gomatrixserverlib.VerifyJSON accepts each. The
// verifiers that check signatures their own way (roomserver.NameVerifier
// natively, WebCrypto's in the browser) are held to it, so a native node
// and a browser node accept exactly what gomatrixserverlib does. It
// imports nothing of Hearth's.
package sigcases

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Signer is a server and its key.
type Signer struct {
	Name string
	Priv ed25519.PrivateKey
}

// Sign signs msg as signingName's keyID with s's key (which need not be
// signingName's).
func (s Signer) Sign(t testing.TB, signingName string, keyID gomatrixserverlib.KeyID, msg string) []byte {
	t.Helper()
	out, err := gomatrixserverlib.SignJSON(signingName, keyID, s.Priv, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Case is one message to verify as Server's.
type Case struct {
	Name   string
	Server string
	Msg    []byte
	Valid  bool
}

// Cases are messages signed by a (or forged) under keyID, to verify with
// a's and b's keys by their names; unknown is a server name with no key.
func Cases(t testing.TB, a, b Signer, keyID gomatrixserverlib.KeyID, unknown string) []Case {
	const body = `{"type":"m.room.message","content":{"body":"hello","msgtype":"m.text"},"origin_server_ts":1,"unsigned":{"age":3}}`
	good := a.Sign(t, a.Name, keyID, body)
	reordered := Edit(t, good, func(map[string]any) {}) // keys sorted, spacing changed: the same canonical JSON
	return []Case{
		{"valid", a.Name, good, true},
		{"valid after re-encoding", a.Name, reordered, true},
		{"tampered content", a.Name, Edit(t, good, func(m map[string]any) {
			m["content"].(map[string]any)["body"] = "hellO"
		}), false},
		{"tampered unsigned", a.Name, Edit(t, good, func(m map[string]any) {
			m["unsigned"] = map[string]any{"age": 99, "extra": true}
		}), true},
		{"signed by another key", a.Name, b.Sign(t, a.Name, keyID, body), false},
		{"signed by the other server, asked for its own", b.Name, a.Sign(t, b.Name, keyID, body), false},
		{"no signatures", a.Name, []byte(body), false},
		{"no entry for the server", a.Name, b.Sign(t, b.Name, keyID, body), false},
		{"no entry for the key ID", a.Name, a.Sign(t, a.Name, "ed25519:other", body), false},
		{"malformed base64", a.Name, Edit(t, good, func(m map[string]any) {
			m["signatures"] = map[string]any{a.Name: map[string]any{string(keyID): "!!not base64!!"}}
		}), false},
		{"short signature", a.Name, Edit(t, good, func(m map[string]any) {
			m["signatures"] = map[string]any{a.Name: map[string]any{string(keyID): "AAAA"}}
		}), false},
		{"signatures not an object", a.Name, Edit(t, good, func(m map[string]any) { m["signatures"] = 7 }), false},
		{"signature not a string", a.Name, Edit(t, good, func(m map[string]any) {
			m["signatures"] = map[string]any{a.Name: map[string]any{string(keyID): 7}}
		}), false},
		// Repeated keys: the last counts, for either verifier.
		{"a bad signature repeated after the good one", a.Name, repeatKey(good, a.Name, keyID, "AAAA"), false},
		{"the good signature repeated after a bad one", a.Name,
			repeatKey(repeatKey(good, a.Name, keyID, "AAAA"), a.Name, keyID, signatureOf(t, good, a.Name, keyID)), true},
		{"not JSON", a.Name, []byte("not json"), false},
		{"not an object", a.Name, []byte(`[1,2]`), false},
		{"server name that is not a key", unknown, good, false},
	}
}

// Agree checks that v accepts and refuses each case as Valid says, and as
// gomatrixserverlib.VerifyJSON does with the key keyOf gives.
func Agree(t *testing.T, v gomatrixserverlib.JSONVerifier, keyID gomatrixserverlib.KeyID, keyOf func(string) (ed25519.PublicKey, error), cases []Case) {
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			var goErr error
			if key, err := keyOf(c.Server); err != nil {
				goErr = err
			} else {
				goErr = gomatrixserverlib.VerifyJSON(c.Server, keyID, key, c.Msg)
			}
			res, err := v.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{ServerName: spec.ServerName(c.Server), Message: c.Msg}})
			if err != nil || len(res) != 1 {
				t.Fatalf("VerifyJSONs: %v, %d results", err, len(res))
			}
			if (goErr == nil) != c.Valid {
				t.Errorf("gomatrixserverlib.VerifyJSON: %v, want valid=%v", goErr, c.Valid)
			}
			if (res[0].Error == nil) != c.Valid {
				t.Errorf("%T: %v, want valid=%v", v, res[0].Error, c.Valid)
			}
		})
	}
}

// Edit decodes a JSON object, changes it and encodes it again.
func Edit(t testing.TB, msg []byte, f func(map[string]any)) []byte {
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

// repeatKey appends a second entry for server's key ID to the signatures
// of msg (JSON with a repeated key: encoding/json keeps the last).
func repeatKey(msg []byte, server string, keyID gomatrixserverlib.KeyID, sig string) []byte {
	entry := fmt.Sprintf(`%q:%q`, keyID, sig)
	i := bytes.Index(msg, []byte(fmt.Sprintf(`%q:{`, server)))
	if i < 0 {
		panic("no signatures of " + server)
	}
	at := bytes.IndexByte(msg[i:], '}') + i
	return slices.Concat(msg[:at], []byte(","+entry), msg[at:])
}

// signatureOf is server's signature in msg.
func signatureOf(t testing.TB, msg []byte, server string, keyID gomatrixserverlib.KeyID) string {
	var m struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(msg, &m); err != nil {
		t.Fatal(err)
	}
	return m.Signatures[server][string(keyID)]
}
