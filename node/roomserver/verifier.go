package roomserver

import (
	"context"
	"crypto/ed25519"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
)

// NameVerifier verifies signatures with keys named by server names
// themselves: it asks KeyOf for a server's key and needs no key server and
// no network. Every Hearth server signs with the one key ID KeyID.
type NameVerifier struct {
	KeyID gomatrixserverlib.KeyID
	KeyOf func(serverName string) (ed25519.PublicKey, error)
}

// VerifyJSONs implements gomatrixserverlib.JSONVerifier.
func (v NameVerifier) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, req := range reqs {
		key, err := v.KeyOf(string(req.ServerName))
		if err != nil {
			out[i].Error = fmt.Errorf("key of %s: %w", req.ServerName, err)
			continue
		}
		out[i].Error = gomatrixserverlib.VerifyJSON(string(req.ServerName), v.KeyID, key, req.Message)
	}
	return out, nil
}
