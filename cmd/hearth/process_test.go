package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"hearth/p2p/identity"
)

// TestProcessLifecycle runs the real binary: it starts, reports the server
// name of the key it created in the data dir, stops cleanly on SIGINT and
// comes back with the same name.
func TestProcessLifecycle(t *testing.T) {
	data := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	p := startHearth(t, data, "--no-registration", "--p2p", "/ip4/127.0.0.1/tcp/0")
	var st Status
	if err := newClient(p.URL).do(ctx, "GET", "/_hearth/v1/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	id, err := identity.LoadOrCreate(data) // reads the key the node created
	if err != nil {
		t.Fatal(err)
	}
	if st.ServerName != id.ServerName || st.PeerID != id.PeerID.String() {
		t.Fatalf("status %+v, want the data dir's identity %s", st, id.ServerName)
	}
	if !strings.Contains(p.log.String(), "server_name="+id.ServerName) {
		t.Errorf("start-up log does not name the server:\n%s", p.log)
	}
	p.stop(t, 15*time.Second)

	p = startHearth(t, data)
	var again Status
	if err := newClient(p.URL).do(ctx, "GET", "/_hearth/v1/status", nil, &again); err != nil {
		t.Fatal(err)
	}
	if again.ServerName != st.ServerName {
		t.Errorf("server name changed across restart: %s → %s", st.ServerName, again.ServerName)
	}
	p.stop(t, 15*time.Second)
}

// TestProcessRejectsBadFlags checks that a typo fails fast with exit code 2
// instead of starting a node with a surprising configuration.
func TestProcessRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--bogus"},
		{"--p2p", "tcp/4001"},
		{"--log-level", "chatty"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, hearthBin(t), append([]string{"--data", t.TempDir()}, args...)...)
		out, err := cmd.CombinedOutput()
		cancel()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("%q: err %v, want exit status 2\n%s", args, err, out)
		}
	}
}

// TestProcessHTTPAddressInUse checks that a taken --http address is a
// clear start-up error, not a node running without its API.
func TestProcessHTTPAddressInUse(t *testing.T) {
	p := startHearth(t, t.TempDir())
	addr := strings.TrimPrefix(p.URL, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, hearthBin(t), "--data", t.TempDir(), "--http", addr, "--p2p", "/ip4/127.0.0.1/tcp/0", "--no-mdns").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "listen") {
		t.Errorf("second node on %s: err %v\n%s", addr, err, out)
	}
	p.stop(t, 15*time.Second)
}

// TestDemo runs `hearth demo`: three peers federate over libp2p on
// loopback and each ends up with every peer's greeting.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, hearthBin(t), "demo", "--peers", "3", "--http-port", "0", "--once", "--data", t.TempDir()).CombinedOutput()
	if err != nil {
		t.Fatalf("hearth demo: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "every peer has all 3 greetings") || strings.Count(string(out), "http://127.0.0.1:") != 3 {
		t.Fatalf("demo output:\n%s", out)
	}
}
