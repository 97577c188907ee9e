package federation

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// QueryRemoteKeys asks server for its users' device and cross-signing
// keys (user ID → device IDs, none meaning all) and returns its answer
// as sent: device keys carry their owners' signatures, which a client
// checks over the exact objects, so nothing is decoded into typed
// structs and re-encoded on the way.
func (f *Federation) QueryRemoteKeys(ctx context.Context, server string, deviceKeys map[string][]string) (json.RawMessage, error) {
	for u, ds := range deviceKeys {
		if ds == nil {
			deviceKeys[u] = []string{}
		}
	}
	return f.rawRequest(ctx, server, "/user/keys/query", map[string]any{"device_keys": deviceKeys})
}

// ClaimRemoteKeys claims one-time keys of server's users' devices (user
// ID → device ID → algorithm) and returns its answer as sent.
func (f *Federation) ClaimRemoteKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (json.RawMessage, error) {
	return f.rawRequest(ctx, server, "/user/keys/claim", map[string]any{"one_time_keys": oneTimeKeys})
}

// rawRequest POSTs a signed request to server's /_matrix/federation/v1
// path and returns the JSON answer undecoded.
func (f *Federation) rawRequest(ctx context.Context, server, path string, body any) (json.RawMessage, error) {
	req := fclient.NewFederationRequest("POST", f.cfg.ServerName, spec.ServerName(server), "/_matrix/federation/v1"+path)
	if err := req.SetContent(body); err != nil {
		return nil, fmt.Errorf("%s %s: %w", server, path, err)
	}
	if err := req.Sign(f.cfg.ServerName, f.cfg.KeyID, f.cfg.PrivateKey); err != nil {
		return nil, fmt.Errorf("%s %s: signing: %w", server, path, err)
	}
	hr, err := req.HTTPRequest()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", server, path, err)
	}
	var out json.RawMessage
	if err := f.client.DoRequestAndParseResponse(ctx, hr, &out); err != nil {
		return nil, fmt.Errorf("%s %s: %w", server, path, err)
	}
	return out, nil
}
