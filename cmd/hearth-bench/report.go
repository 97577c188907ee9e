package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// results is what one run measured; zero means "not measured". The JSON
// names are what scripts (and the README's table) read.
type results struct {
	SeqPerS  float64 `json:"seq_sends_per_s"`
	ConcPerS float64 `json:"concurrent_sends_per_s"`
	// CPU milliseconds per send of the node (when spawned) and of the
	// bench client, in each send phase: like the per-page figures below,
	// steadier than sends/s on a busy machine.
	SeqNodeCPUMS   float64 `json:"seq_node_cpu_ms_per_send,omitempty"`
	SeqBenchCPUMS  float64 `json:"seq_bench_cpu_ms_per_send,omitempty"`
	ConcNodeCPUMS  float64 `json:"concurrent_node_cpu_ms_per_send,omitempty"`
	ConcBenchCPUMS float64 `json:"concurrent_bench_cpu_ms_per_send,omitempty"`
	SyncP50MS      float64 `json:"send_to_sync_p50_ms"`
	SyncP95MS      float64 `json:"send_to_sync_p95_ms"`
	InitialSyncMS  float64 `json:"initial_sync_ms"`
	PagesPerS      float64 `json:"messages_pages_per_s"`
	// CPU milliseconds per /messages page of the node (when spawned) and
	// of the bench client: steadier than pages/s on a busy machine.
	PageNodeCPUMS    float64 `json:"messages_node_cpu_ms_per_page,omitempty"`
	PageBenchCPUMS   float64 `json:"messages_bench_cpu_ms_per_page,omitempty"`
	Pages            int     `json:"messages_pages"`
	PagedEvents      int     `json:"messages_events"`
	Sent             int     `json:"events_sent"`
	Missing          int     `json:"events_missing"`
	Duplicates       int     `json:"events_duplicated"`
	RSSMiB           float64 `json:"rss_mib,omitempty"`
	PeakRSSMiB       float64 `json:"peak_rss_mib,omitempty"`
	DataBytes        int64   `json:"db_bytes,omitempty"`
	DataRunningBytes int64   `json:"db_bytes_running,omitempty"`
	StartupMS        float64 `json:"startup_ms,omitempty"`
	RestartMS        float64 `json:"restart_ms,omitempty"`
	RateLimited      int64   `json:"rate_limited_retries"`
	// Shape of the concurrent phase, for the table's label.
	Workers int `json:"workers"`
	PerWork int `json:"sends_per_worker"`
}

// target is one of issue 2's figures.
type target struct {
	name   string
	value  float64
	unit   string
	limit  float64
	atMost bool // the value must be ≤ limit (else ≥)
}

func (r *results) targets() []target {
	ts := []target{
		{"sequential sends", r.SeqPerS, "/s", 1500, false},
		{fmt.Sprintf("concurrent sends (%d×%d)", r.Workers, r.PerWork), r.ConcPerS, "/s", 4000, false},
		{"send→sync p50", r.SyncP50MS, "ms", 2, true},
		{"send→sync p95", r.SyncP95MS, "ms", 0, true},
		{"initial sync (median)", r.InitialSyncMS, "ms", 0, true},
		{"/messages pages (limit 100)", r.PagesPerS, "/s", 1000, false},
	}
	if r.StartupMS > 0 {
		ts = append(ts,
			target{"RSS after the run", r.RSSMiB, "MiB", 48, true},
			target{"peak RSS", r.PeakRSSMiB, "MiB", 0, true},
			target{"database at rest", float64(r.DataBytes) / 1e6, "MB", 4, true},
			target{"database while running", float64(r.DataRunningBytes) / 1e6, "MB", 0, true},
			target{"start-up (spawn → /versions)", r.StartupMS, "ms", 50, true},
			target{"restart on the full database", r.RestartMS, "ms", 50, true},
		)
	}
	return ts
}

func (t target) met() bool {
	switch {
	case t.limit == 0:
		return true // reported, no target
	case t.atMost:
		return t.value > 0 && t.value <= t.limit
	default:
		return t.value >= t.limit
	}
}

func (r *results) allMet() bool {
	for _, t := range r.targets() {
		if !t.met() {
			return false
		}
	}
	return true
}

// print writes the table, then the JSON line.
func (r *results) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tvalue\ttarget\t\t")
	for _, t := range r.targets() {
		goal, mark := "", ""
		if t.limit > 0 {
			op := "≥"
			if t.atMost {
				op = "≤"
			}
			goal = fmt.Sprintf("%s %g %s", op, t.limit, t.unit)
			mark = "ok"
			if !t.met() {
				mark = "MISSED"
			}
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t\n", t.name, format(t.value), t.unit, goal, mark)
	}
	fmt.Fprintf(tw, "events sent / paged back\t%d / %d\t\t\t\n", r.Sent, r.PagedEvents)
	fmt.Fprintf(tw, "missing / duplicated\t%d / %d\t\t\t\n", r.Missing, r.Duplicates)
	if r.RateLimited > 0 {
		fmt.Fprintf(tw, "429 answers retried\t%d\t\t\t\n", r.RateLimited)
	}
	tw.Flush()
	b, _ := json.Marshal(r)
	fmt.Fprintf(w, "%s\n", b)
}

func format(v float64) string {
	switch {
	case v == 0:
		return "—"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
