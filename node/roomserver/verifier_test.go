package roomserver_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
	"hearth/node/roomserver/sigcases"
)

// NameVerifier, which canonicalises messages itself (SignedBytes), accepts
// and refuses exactly what gomatrixserverlib.VerifyJSON does.
func TestNameVerifierAgreesWithVerifyJSON(t *testing.T) {
	const keyID = "ed25519:p2p"
	keys := map[string]ed25519.PublicKey{}
	signer := func(name string) sigcases.Signer {
		pub, priv, _ := ed25519.GenerateKey(nil)
		keys[name] = pub
		return sigcases.Signer{Name: name, Priv: priv}
	}
	a, b := signer("a.test"), signer("b.test")
	keyOf := func(name string) (ed25519.PublicKey, error) {
		if k, ok := keys[name]; ok {
			return k, nil
		}
		return nil, fmt.Errorf("no key for %s", name)
	}
	v := roomserver.NameVerifier{KeyID: keyID, KeyOf: keyOf}
	for _, c := range sigcases.Cases(t, a, b, keyID, "unknown.test") {
		t.Run(c.Name, func(t *testing.T) {
			goErr := fmt.Errorf("no key")
			if key, err := keyOf(c.Server); err == nil {
				goErr = gomatrixserverlib.VerifyJSON(c.Server, keyID, key, c.Msg)
			}
			res, err := v.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{ServerName: spec.ServerName(c.Server), Message: c.Msg}})
			if err != nil || len(res) != 1 {
				t.Fatalf("VerifyJSONs: %v, %d results", err, len(res))
			}
			if (goErr == nil) != c.Valid {
				t.Errorf("VerifyJSON: %v, want valid=%v", goErr, c.Valid)
			}
			if (res[0].Error == nil) != c.Valid {
				t.Errorf("NameVerifier: %v, want valid=%v", res[0].Error, c.Valid)
			}
		})
	}
}
