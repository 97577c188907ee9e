package roomserver_test

import (
	"crypto/ed25519"
	"testing"

	"hearth/node/internal/testnet"
	"hearth/node/roomserver/sigcases"
)

// NameVerifier, which canonicalises messages itself (SignedBytes), accepts
// and refuses exactly what gomatrixserverlib.VerifyJSON does.
func TestNameVerifierAgreesWithVerifyJSON(t *testing.T) {
	keys := testnet.New()
	signer := func(name string) sigcases.Signer {
		pub, priv, _ := ed25519.GenerateKey(nil)
		keys.AddKey(name, pub)
		return sigcases.Signer{Name: name, Priv: priv}
	}
	a, b := signer("a.test"), signer("b.test")
	cases := sigcases.Cases(t, a, b, testnet.KeyID, "unknown.test")
	sigcases.Agree(t, keys.Verifier(), testnet.KeyID, keys.KeyOf, cases)
}
