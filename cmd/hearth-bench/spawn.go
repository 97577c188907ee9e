package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// spawned is a bin/hearth the bench started itself.
type spawned struct {
	cmd     *exec.Cmd
	URL     string
	Data    string
	LogPath string
	// Startup is the time from starting the process to the first 200 from
	// /_matrix/client/versions.
	Startup time.Duration
	done    chan struct{}
	err     error
}

var listeningRE = regexp.MustCompile(`msg=listening .*\baddr=(\S+)`)

// spawn starts bin on data with a free loopback port, logs to data's
// sibling file, and waits until /versions answers 200.
func spawn(ctx context.Context, bin, data string, hc *http.Client) (*spawned, error) {
	logPath := data + ".log"
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("spawn: %w", err)
	}
	cmd := exec.Command(bin, "--data", data, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0", "--no-mdns")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("spawn: %w", err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("spawn %s: %w", bin, err)
	}
	s := &spawned{cmd: cmd, Data: data, LogPath: logPath, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		// Copy the node's log to a file, picking out its address.
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(logf, stderr)
		s.err = cmd.Wait()
		logf.Close()
		close(s.done)
	}()

	select {
	case a := <-addr:
		s.URL = "http://" + a
	case <-s.done:
		return nil, fmt.Errorf("hearth exited before listening (%v); log in %s", s.err, logPath)
	case <-time.After(30 * time.Second):
		s.kill()
		return nil, fmt.Errorf("hearth did not listen within 30s; log in %s", logPath)
	case <-ctx.Done():
		s.kill()
		return nil, ctx.Err()
	}
	// Poll tightly: start-up is measured in milliseconds.
	for {
		if ok, err := versionsOK(ctx, hc, s.URL); ok {
			break
		} else if time.Since(start) > 30*time.Second {
			s.kill()
			return nil, fmt.Errorf("/_matrix/client/versions did not answer 200 within 30s (last: %v); log in %s", err, logPath)
		}
		time.Sleep(500 * time.Microsecond)
	}
	s.Startup = time.Since(start)
	return s, nil
}

func versionsOK(ctx context.Context, hc *http.Client, base string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/_matrix/client/versions", nil)
	if err != nil {
		return false, err
	}
	res, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		return false, fmt.Errorf("HTTP %d", res.StatusCode)
	}
	return true, nil
}

// stop sends SIGTERM and waits for a clean exit (SIGKILL after timeout).
func (s *spawned) stop(timeout time.Duration) error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		if s.err != nil {
			return fmt.Errorf("hearth exited with %v; log in %s", s.err, s.LogPath)
		}
		return nil
	case <-time.After(timeout):
		s.kill()
		return fmt.Errorf("hearth did not stop within %s of SIGTERM; killed", timeout)
	}
}

func (s *spawned) kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// memory reads the node's resident set size and its peak, in bytes, from
// /proc/PID/status (Linux).
func (s *spawned) memory() (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read RSS: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n * 1024
		case "VmHWM":
			peak = n * 1024
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", s.cmd.Process.Pid)
	}
	return rss, peak, nil
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += fi.Size()
		}
		return nil
	})
	return total, err
}
