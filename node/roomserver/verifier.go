package roomserver

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// NameVerifier verifies signatures with keys named by server names
// themselves: it asks KeyOf for a server's key and needs no key server and
// no network. Every Hearth server signs with the one key ID KeyID.
// It checks what gomatrixserverlib.VerifyJSON checks (see SignedBytes)
// and hands back what it verified (RecordSigned).
type NameVerifier struct {
	KeyID gomatrixserverlib.KeyID
	KeyOf func(serverName string) (ed25519.PublicKey, error)
}

// VerifyJSONs implements gomatrixserverlib.JSONVerifier.
func (v NameVerifier) VerifyJSONs(ctx context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, req := range reqs {
		out[i].Error = v.verify(ctx, req)
	}
	return out, nil
}

func (v NameVerifier) verify(ctx context.Context, req gomatrixserverlib.VerifyJSONRequest) error {
	name := string(req.ServerName)
	key, err := v.KeyOf(name)
	if err != nil {
		return fmt.Errorf("key of %s: %w", name, err)
	}
	sig, canonical, err := SignedBytes(name, v.KeyID, req.Message)
	if err != nil {
		return err
	}
	RecordSigned(ctx, canonical)
	if !ed25519.Verify(key, canonical, sig) {
		return fmt.Errorf("bad signature from %q with ID %q", name, v.KeyID)
	}
	return nil
}

// SignedBytes is gomatrixserverlib.VerifyJSON up to the ed25519 check
// (its errors in lower case): the signature by signingName's keyID and
// the canonical JSON it signs. It takes the message apart as
// gomatrixserverlib.SignJSON puts it together (gjson, sjson,
// canonicalJSON), not through encoding/json maps: in wasm that round trip
// cost more than the signature check itself.
func SignedBytes(signingName string, keyID gomatrixserverlib.KeyID, message []byte) (sig, canonical []byte, err error) {
	if !gjson.ValidBytes(message) {
		return nil, nil, errors.New("not valid JSON")
	}
	root := gjson.ParseBytes(message)
	if !root.IsObject() {
		return nil, nil, errors.New("not a JSON object")
	}
	signatures := root.Get("signatures")
	if !signatures.Exists() || signatures.Type == gjson.Null {
		return nil, nil, errors.New("no signatures")
	}
	if !signatures.IsObject() {
		return nil, nil, errors.New("signatures is not an object")
	}
	// The last of repeated keys counts, as with encoding/json.
	var found gjson.Result
	var bad error
	signatures.ForEach(func(server, byKey gjson.Result) bool {
		if server.String() != signingName {
			return true
		}
		if !byKey.IsObject() && byKey.Type != gjson.Null {
			bad = fmt.Errorf("signatures of %q are not an object", signingName)
			return false
		}
		byKey.ForEach(func(id, s gjson.Result) bool {
			if id.String() == string(keyID) {
				found = s
			}
			return true
		})
		return true
	})
	if bad != nil {
		return nil, nil, bad
	}
	if !found.Exists() {
		return nil, nil, fmt.Errorf("no signature from %q with ID %q", signingName, keyID)
	}
	var signature spec.Base64Bytes
	if err := signature.Decode(found.String()); err != nil || found.Type != gjson.String {
		return nil, nil, fmt.Errorf("bad signature from %q with ID %q", signingName, keyID)
	}
	if len(signature) != ed25519.SignatureSize {
		return nil, nil, fmt.Errorf("bad signature length from %q with ID %q", signingName, keyID)
	}
	// neither is covered by the signature
	unsigned := message
	for _, field := range []string{"signatures", "unsigned"} {
		if unsigned, err = sjson.DeleteBytes(unsigned, field); err != nil {
			return nil, nil, err
		}
	}
	return signature, canonicalJSON(unsigned), nil
}

// SignedHash is the SHA-256 of what verifiers checked signatures over,
// handed back through the context they were given (WithSignedHash). For
// an event, gomatrixserverlib.VerifyEventSignatures asks to verify its
// redacted JSON, and the canonical form of that without signatures and
// unsigned is exactly what the event's reference hash, and so its ID, is
// the SHA-256 of: CheckEvents takes the ID from here rather than have
// gomatrixserverlib redact, re-encode and canonicalise the event again
// (a quarter of a browser check worker's time).
type SignedHash struct {
	mu     sync.Mutex
	sum    [sha256.Size]byte
	n      int
	differ bool
}

type signedHashKey struct{}

// WithSignedHash returns ctx asking the verifiers it is passed to for
// what they verified, and where they record it.
func WithSignedHash(ctx context.Context) (context.Context, *SignedHash) {
	h := &SignedHash{}
	return context.WithValue(ctx, signedHashKey{}, h), h
}

// RecordSigned is how a gomatrixserverlib.JSONVerifier that canonicalises
// messages itself (SignedBytes) hands back what it checked a signature
// over, if ctx asks (WithSignedHash): canonical is a message's canonical
// JSON without signatures and unsigned.
func RecordSigned(ctx context.Context, canonical []byte) {
	h, _ := ctx.Value(signedHashKey{}).(*SignedHash)
	if h == nil {
		return
	}
	sum := sha256.Sum256(canonical)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n > 0 && sum != h.sum {
		h.differ = true
	}
	h.sum = sum
	h.n++
}

// Sum is the hash recorded, if any was and every one recorded was the
// same (VerifyEventSignatures asks to verify one message per event, once
// per server that must have signed it).
func (h *SignedHash) Sum() ([sha256.Size]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sum, h.n > 0 && !h.differ
}
