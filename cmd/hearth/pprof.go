package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
)

// An opt-in CPU profile of the node, for finding where a spawned node's
// time goes (hearth-bench --spawn passes its environment on):
//
//	HEARTH_CPUPROFILE=/tmp/hearth-%p.prof bin/hearth-bench --spawn
//	go tool pprof -top -cum bin/hearth /tmp/hearth-1234.prof
//
// "%p" in the path becomes the process ID, so a restarted node does not
// overwrite the first one's profile. It is an environment variable rather
// than a flag so that it never shows in --help nor in anyone's scripts.
const cpuProfileEnv = "HEARTH_CPUPROFILE"

// startProfile starts the CPU profile HEARTH_CPUPROFILE asks for and
// returns what stops it and writes it out (nothing to do when unset).
func startProfile() (stop func()) {
	path := os.Getenv(cpuProfileEnv)
	if path == "" {
		return func() {}
	}
	path = strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid()))
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "hearth: %s: %v\n", cpuProfileEnv, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "hearth: %s: %v\n", cpuProfileEnv, err)
		}
	}
}
