//go:build !js

package host

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"hearth/p2p/identity"
)

func newIdentity(t testing.TB) *identity.Identity {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.New(priv)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var loopbackTCP = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}

// startHost starts a host with opts (a fresh identity unless given) and
// closes it when the test ends.
func startHost(t testing.TB, opts Options) *Host {
	t.Helper()
	if opts.Identity == nil {
		opts.Identity = newIdentity(t)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
		if os.Getenv("HEARTH_TEST_LOG") != "" {
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

// addrWith returns the first of h's full addresses containing part (e.g.
// "/tcp/" or "/ws").
func addrWith(t testing.TB, h *Host, part string, exclude ...string) ma.Multiaddr {
	t.Helper()
next:
	for _, a := range h.Addrs() {
		s := a.String()
		if !strings.Contains(s, part) {
			continue
		}
		for _, x := range exclude {
			if strings.Contains(s, x) {
				continue next
			}
		}
		return a
	}
	t.Fatalf("%s has no address with %q in %v", h.ServerName(), part, h.Addrs())
	return nil
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasPeer(h *Host, name string) bool {
	for _, p := range h.Peers() {
		if p.ServerName == name {
			return true
		}
	}
	return false
}
