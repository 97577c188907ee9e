package clientapi

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

// RemoteKeys asks other servers about their users' keys. The Config's
// Federation may implement it; without it only this server's users' keys
// are served.
type RemoteKeys interface {
	// QueryRemoteKeys returns server's answer to a federation
	// /user/keys/query (user ID → device IDs), undecoded.
	QueryRemoteKeys(ctx context.Context, server string, deviceKeys map[string][]string) (json.RawMessage, error)
	// ClaimRemoteKeys returns server's answer to a federation
	// /user/keys/claim (user ID → device ID → algorithm), undecoded.
	ClaimRemoteKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (json.RawMessage, error)
}

func (a *API) remoteKeys() RemoteKeys {
	k, _ := a.cfg.Federation.(RemoteKeys)
	return k
}

// defaultKeysTimeout is how long /keys/query and /keys/claim wait for
// other servers when the client does not say.
const defaultKeysTimeout = 10 * time.Second

// keysTimeout is a request's "timeout" (milliseconds), bounded.
func keysTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return defaultKeysTimeout
	}
	return min(time.Duration(*ms)*time.Millisecond, time.Minute)
}

// serverOfUser is the server part of a user ID, "" if it has none.
func serverOfUser(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// splitByServer splits a map keyed by user ID into this server's part
// and each other server's.
func splitByServer[V any](local string, m map[string]V) (mine map[string]V, remote map[string]map[string]V) {
	mine, remote = map[string]V{}, map[string]map[string]V{}
	for user, v := range m {
		switch s := serverOfUser(user); {
		case s == local:
			mine[user] = v
		case s != "":
			if remote[s] == nil {
				remote[s] = map[string]V{}
			}
			remote[s][user] = v
		}
	}
	return mine, remote
}

// askServers asks every server at once, each within timeout, and returns
// the answers decoded into A and, for each server that gave none (or one
// that does not decode), a failure for the client's "failures".
func askServers[A, V any](ctx context.Context, timeout time.Duration, remote map[string]map[string]V,
	ask func(ctx context.Context, server string, q map[string]V) (json.RawMessage, error)) (map[string]*A, map[string]any) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	answers, failures := map[string]*A{}, map[string]any{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for server, q := range remote {
		wg.Go(func() {
			raw, err := ask(ctx, server, q)
			status := 503 // unreachable
			var res A
			if err == nil {
				if err = json.Unmarshal(raw, &res); err != nil {
					status, err = 502, fmt.Errorf("unreadable answer: %w", err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[server] = map[string]any{"status": status, "message": err.Error()}
				return
			}
			answers[server] = &res
		})
	}
	wg.Wait()
	return answers, failures
}

// ownUsers keeps the entries of a server's answer that are about its own
// users: a server speaks for no one else.
func ownUsers[V any](server string, m map[string]V, into map[string]V) {
	for user, v := range m {
		if serverOfUser(user) == server {
			into[user] = v
		}
	}
}
