package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startCPUProfile profiles the bench client itself into path (nothing
// when path is empty): the client shares the machine with the node, so
// its own decoding is part of every end-to-end figure. The returned
// function writes the profile out.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
