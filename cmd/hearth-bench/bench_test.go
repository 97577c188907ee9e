package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSpawnedRun runs the whole tool, small, against a freshly built
// bin/hearth: every phase completes, every acknowledged event comes back
// exactly once, and the spawned-only figures are filled in. It asserts
// what was measured, never how fast.
func TestSpawnedRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "hearth")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "hearth/cmd/hearth").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := config{Spawn: true, Hearth: bin, Seq: 30, Workers: 2, PerWork: 15, Latency: 5, Initial: 2, Walks: 2}
	r, err := run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := cfg.Seq + cfg.Workers*cfg.PerWork + cfg.Latency; r.Sent != want {
		t.Errorf("sent %d events, want %d", r.Sent, want)
	}
	if r.Missing != 0 || r.Duplicates != 0 || r.PagedEvents < r.Sent || r.Pages < 1 {
		t.Errorf("pagination: %+v", r)
	}
	for name, v := range map[string]float64{
		"seq": r.SeqPerS, "concurrent": r.ConcPerS, "p50": r.SyncP50MS, "initial sync": r.InitialSyncMS,
		"pages/s": r.PagesPerS, "rss": r.RSSMiB, "startup": r.StartupMS, "restart": r.RestartMS,
	} {
		if v <= 0 {
			t.Errorf("%s not measured: %v", name, v)
		}
	}
	if r.DataBytes <= 0 {
		t.Errorf("database size not measured")
	}
	if _, err := os.Stat("/proc/self/task"); err == nil { // CPU times come from /proc
		for name, v := range map[string]float64{
			"node CPU a sequential send": r.SeqNodeCPUMS, "bench CPU a sequential send": r.SeqBenchCPUMS,
			"node CPU a concurrent send": r.ConcNodeCPUMS, "bench CPU a concurrent send": r.ConcBenchCPUMS,
			"node CPU a page": r.PageNodeCPUMS, "bench CPU a page": r.PageBenchCPUMS,
		} {
			if v <= 0 {
				t.Errorf("%s not measured: %v", name, v)
			}
		}
	}

	var out bytes.Buffer
	r.print(&out)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var back results
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &back); err != nil || back.Sent != r.Sent {
		t.Errorf("last line is not the results as JSON: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "sequential sends") {
		t.Errorf("no table:\n%s", out.String())
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(d, 50); p != 50*time.Millisecond {
		t.Errorf("p50 %v", p)
	}
	if p := percentile(d, 95); p != 95*time.Millisecond {
		t.Errorf("p95 %v", p)
	}
	if p := percentile(d[:1], 95); p != time.Millisecond {
		t.Errorf("p95 of one %v", p)
	}
	if p := percentile(nil, 50); p != 0 {
		t.Errorf("p50 of none %v", p)
	}
}

func TestTargets(t *testing.T) {
	for _, tc := range []struct {
		t    target
		want bool
	}{
		{target{value: 1600, limit: 1500}, true},
		{target{value: 1400, limit: 1500}, false},
		{target{value: 1.5, limit: 2, atMost: true}, true},
		{target{value: 2.5, limit: 2, atMost: true}, false},
		{target{value: 0, limit: 2, atMost: true}, false}, // not measured is not met
		{target{value: 123}, true},                        // no target
	} {
		if got := tc.t.met(); got != tc.want {
			t.Errorf("%+v: met %v", tc.t, got)
		}
	}
}
