// Command hearth-bench is Hearth's load tool: against a running node
// (--url) or a bin/hearth it starts itself on a temp dir (--spawn), it
// registers users, creates a room and measures sequential and concurrent
// sends, send→sync delivery, initial sync, full back-pagination with
// /messages (checking every acknowledged event comes back exactly once),
// and, when it spawned the node, start-up time, RSS and database size.
//
// It prints a table against issue 2's targets and one JSON line. It exits
// non-zero when something is wrong (an error, a lost or duplicated event),
// and for missed targets only with --strict. It talks to the node over
// HTTP only and imports no hearth package.
//
// For finding where pagination's time goes: --walks N paginates N times
// (the table reports the first walk; each prints its pages/s and the CPU
// milliseconds per page of the node and of the bench, from /proc, which
// a busy machine disturbs less than wall-clock time), --cpuprofile
// profiles the bench, and HEARTH_CPUPROFILE=/tmp/hearth-%p.prof in the
// environment profiles a spawned node (see cmd/hearth/pprof.go).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

type config struct {
	URL      string
	Spawn    bool
	Hearth   string
	Seq      int
	Workers  int
	PerWork  int
	Latency  int
	Initial  int
	Timeout  time.Duration
	Strict   bool
	KeepData bool
	// CPUProfile is where to write the bench client's own CPU profile
	// (the node's: HEARTH_CPUPROFILE, see cmd/hearth/pprof.go).
	CPUProfile string
	// Walks is how many times to back-paginate; the figure is the first
	// walk's, the others (checked the same way) only print to stderr and
	// give a profile enough samples.
	Walks int
}

func main() {
	var cfg config
	flag.StringVar(&cfg.URL, "url", "", "base URL of a running node, e.g. http://127.0.0.1:8008")
	flag.BoolVar(&cfg.Spawn, "spawn", false, "start --hearth on a temp data dir and a free loopback port")
	flag.StringVar(&cfg.Hearth, "hearth", "bin/hearth", "the hearth binary --spawn starts")
	flag.IntVar(&cfg.Seq, "seq", 2000, "sequential sends")
	flag.IntVar(&cfg.Workers, "workers", 4, "concurrent senders, each its own user")
	flag.IntVar(&cfg.PerWork, "per-worker", 500, "sends per concurrent sender")
	flag.IntVar(&cfg.Latency, "latency", 200, "send→sync delivery samples")
	flag.IntVar(&cfg.Initial, "initial-syncs", 5, "initial syncs to time (the median is reported)")
	flag.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "give up after this long")
	flag.BoolVar(&cfg.Strict, "strict", false, "exit 1 when a target is missed")
	flag.BoolVar(&cfg.KeepData, "keep", false, "keep the spawned node's data dir")
	flag.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write the bench client's CPU profile to this file")
	flag.IntVar(&cfg.Walks, "walks", 1, "back-paginate this many times (the table reports the first; more are for profiling and raise the RSS read after them)")
	flag.Parse()
	if cfg.Spawn == (cfg.URL != "") {
		fmt.Fprintln(os.Stderr, "hearth-bench: give exactly one of --url or --spawn")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	stopProfile, err := startCPUProfile(cfg.CPUProfile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth-bench:", err)
		os.Exit(2)
	}
	r, err := run(ctx, cfg)
	stopProfile()
	if r != nil {
		r.print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth-bench:", err)
		os.Exit(1)
	}
	if cfg.Strict && !r.allMet() {
		fmt.Fprintln(os.Stderr, "hearth-bench: some targets were missed")
		os.Exit(1)
	}
}

// run measures everything; on error it returns what was measured so far.
func run(ctx context.Context, cfg config) (*results, error) {
	hc := newHTTPClient()
	r := &results{Workers: cfg.Workers, PerWork: cfg.PerWork}
	var node *spawned
	base := cfg.URL
	var tmp string
	if cfg.Spawn {
		var err error
		tmp, err = os.MkdirTemp("", "hearth-bench-")
		if err != nil {
			return nil, err
		}
		if !cfg.KeepData {
			defer os.RemoveAll(tmp)
		}
		node, err = spawn(ctx, cfg.Hearth, filepath.Join(tmp, "data"), hc)
		if err != nil {
			return nil, err
		}
		defer func() {
			if node != nil {
				node.kill()
			}
		}()
		base = node.URL
		r.StartupMS = ms(node.Startup)
		fmt.Fprintf(os.Stderr, "spawned %s at %s (data %s)\n", cfg.Hearth, base, node.Data)
	}

	var retries atomic.Int64
	newClient := func() *client { return &client{base: base, hc: hc, retries: &retries} }
	b := &bench{cfg: cfg}
	defer func() { r.RateLimited = retries.Load() }()
	prefix := "bench" + randHex(3) + "_"
	step := func(name string) func() {
		start := time.Now()
		fmt.Fprintf(os.Stderr, "%-28s", name+"…")
		return func() { fmt.Fprintf(os.Stderr, " %s\n", time.Since(start).Round(time.Millisecond)) }
	}

	done := step("setup")
	if err := b.setup(ctx, newClient, prefix); err != nil {
		return r, err
	}
	done()
	var err error
	done = step(fmt.Sprintf("%d sequential sends", cfg.Seq))
	cpu := startCPU(node)
	if r.SeqPerS, err = b.sequential(ctx, cfg.Seq); err != nil {
		return r, err
	}
	r.SeqNodeCPUMS, r.SeqBenchCPUMS = cpu.per(cfg.Seq)
	done()
	fmt.Fprintf(os.Stderr, "  %s\n", cpu.String(cfg.Seq, "send"))
	done = step(fmt.Sprintf("%d×%d concurrent sends", cfg.Workers, cfg.PerWork))
	cpu = startCPU(node)
	if r.ConcPerS, err = b.concurrent(ctx, cfg.PerWork); err != nil {
		return r, err
	}
	r.ConcNodeCPUMS, r.ConcBenchCPUMS = cpu.per(cfg.Workers * cfg.PerWork)
	done()
	fmt.Fprintf(os.Stderr, "  %s\n", cpu.String(cfg.Workers*cfg.PerWork, "send"))
	done = step(fmt.Sprintf("%d send→sync deliveries", cfg.Latency))
	p50, p95, err := b.delivery(ctx, cfg.Latency)
	if err != nil {
		return r, err
	}
	r.SyncP50MS, r.SyncP95MS = ms(p50), ms(p95)
	done()
	done = step("initial sync")
	d, err := b.initialSync(ctx, cfg.Initial)
	if err != nil {
		return r, err
	}
	r.InitialSyncMS = ms(d)
	done()
	done = step("back-pagination")
	cpu = startCPU(node)
	pg, err := b.paginate(ctx)
	if err != nil {
		return r, err
	}
	r.PageNodeCPUMS, r.PageBenchCPUMS = cpu.per(pg.Pages)
	done()
	fmt.Fprintf(os.Stderr, "walk 1: %.0f pages/s, %s\n", pg.PagesPerS, cpu.String(pg.Pages, "page"))
	for i := 2; i <= cfg.Walks; i++ {
		cpu := startCPU(node)
		again, err := b.paginate(ctx)
		if err != nil {
			return r, err
		}
		if len(again.Missing) > 0 || len(again.Duplicates) > 0 || !again.ReachedTop {
			return r, fmt.Errorf("walk %d: %d events missing, %d duplicated, reached the top: %v",
				i, len(again.Missing), len(again.Duplicates), again.ReachedTop)
		}
		fmt.Fprintf(os.Stderr, "walk %d: %.0f pages/s, %s\n", i, again.PagesPerS, cpu.String(again.Pages, "page"))
	}
	r.Pages, r.PagesPerS, r.PagedEvents = pg.Pages, pg.PagesPerS, pg.Events
	r.Sent, r.Missing, r.Duplicates = len(b.sent), len(pg.Missing), len(pg.Duplicates)
	var problems []error
	if len(pg.Missing) > 0 {
		problems = append(problems, fmt.Errorf("%d acknowledged events missing from /messages, e.g. %v", len(pg.Missing), head(pg.Missing)))
	}
	if len(pg.Duplicates) > 0 {
		problems = append(problems, fmt.Errorf("%d events returned more than once by /messages, e.g. %v", len(pg.Duplicates), head(pg.Duplicates)))
	}
	if !pg.ReachedTop {
		problems = append(problems, errors.New("back-pagination ended before the room's m.room.create"))
	}

	if node != nil {
		rss, peak, err := node.memory()
		if err != nil {
			return r, err
		}
		r.RSSMiB, r.PeakRSSMiB = mib(rss), mib(peak)
		if n, err := dirSize(node.Data); err == nil {
			r.DataRunningBytes = n
		}
		// Size the database after a clean stop, when the WAL is folded in:
		// that is what the data dir holds at rest.
		if err := node.stop(30 * time.Second); err != nil {
			return r, err
		}
		if r.DataBytes, err = dirSize(node.Data); err != nil {
			return r, err
		}
		// A restart on the full database is the start-up users live with.
		again, err := spawn(ctx, cfg.Hearth, node.Data, hc)
		if err != nil {
			return r, fmt.Errorf("restart: %w", err)
		}
		node = again
		r.RestartMS = ms(again.Startup)
		if err := again.stop(30 * time.Second); err != nil {
			return r, err
		}
		node = nil
	}
	return r, errors.Join(problems...)
}

func head(ids []string) []string { return ids[:min(len(ids), 3)] }

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func mib(b int64) float64 { return float64(b) / (1 << 20) }
