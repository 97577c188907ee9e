package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPU time, as a figure the shared, noisy machine disturbs far less than
// wall-clock time: what the node (summed over its threads, from /proc)
// and the bench itself spent on the CPU (Linux only: elsewhere both read
// 0).

// processCPU is the CPU time of every live thread of a process ("self"
// for this one), from the first field of /proc/PID/task/*/schedstat (ns).
func processCPU(pid string) time.Duration {
	dir := filepath.Join("/proc", pid, "task")
	tasks, _ := os.ReadDir(dir)
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited
		}
		if fields := strings.Fields(string(b)); len(fields) > 0 {
			ns, _ := strconv.ParseInt(fields[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

// cpuMeter measures the CPU the node (when spawned) and the bench spend
// between its start and its read.
type cpuMeter struct {
	nodePID    string // "" when the node is not ours to watch
	node, self time.Duration
}

func startCPU(node *spawned) *cpuMeter {
	m := &cpuMeter{}
	if node != nil {
		m.nodePID = strconv.Itoa(node.cmd.Process.Pid)
		m.node = processCPU(m.nodePID)
	}
	m.self = processCPU("self")
	return m
}

// per returns the node's and the bench's CPU milliseconds per unit of
// work (a page, a send) since the meter started (the node's is 0 when it
// is not ours).
func (m *cpuMeter) per(n int) (node, self float64) {
	if n == 0 {
		return 0, 0
	}
	if m.nodePID != "" {
		node = ms(processCPU(m.nodePID)-m.node) / float64(n)
	}
	return node, ms(processCPU("self")-m.self) / float64(n)
}

// String reports per(n) for units of work named unit ("page").
func (m *cpuMeter) String(n int, unit string) string {
	node, self := m.per(n)
	if m.nodePID == "" {
		return fmt.Sprintf("bench CPU %.3f ms/%s", self, unit)
	}
	return fmt.Sprintf("node CPU %.3f ms/%s, bench CPU %.3f ms/%s", node, unit, self, unit)
}
