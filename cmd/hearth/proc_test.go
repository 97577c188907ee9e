package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Helpers for tests that run the real bin/hearth as a child process.

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// hearthBin builds this package into a temp dir, once per test process.
// $HEARTH_TEST_BIN names a prebuilt binary instead (for trying a candidate
// build; go test's cache does not see that file change, so use -count=1).
func hearthBin(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("HEARTH_TEST_BIN"); bin != "" {
		return bin
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "hearth-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "hearth")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proc is a running bin/hearth.
type proc struct {
	cmd  *exec.Cmd
	URL  string
	log  *lockedBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var listeningRE = regexp.MustCompile(`msg=listening .*\baddr=(\S+)`)

// startHearth runs bin/hearth on data with --http 127.0.0.1:0 and waits
// for it to log its address. The process is killed at the end of the test
// if it is still running, and its log is printed if the test failed.
func startHearth(t *testing.T, data string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(hearthBin(t), append([]string{"--data", data, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0", "--no-mdns"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: &lockedBuffer{}, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.log, line)
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(p.log, stderr)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("hearth log (%s):\n%s", data, p.log)
		}
	})
	select {
	case a := <-addr:
		p.URL = "http://" + a
	case <-p.done:
		t.Fatalf("hearth exited before listening: %v\n%s", p.err, p.log)
	case <-time.After(30 * time.Second):
		t.Fatalf("hearth did not start within 30s\n%s", p.log)
	}
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM and waits up to timeout for a clean exit.
func (p *proc) stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("hearth exited with %v after SIGINT\n%s", p.err, p.log)
		}
	case <-time.After(timeout):
		t.Errorf("hearth did not exit within %s of SIGINT", timeout)
		p.kill()
	}
}

// mxClient is a minimal Matrix client for process tests.
type mxClient struct {
	base   string
	token  string
	userID string
	hc     *http.Client
}

// mxError is a non-2xx answer.
type mxError struct {
	Status       int
	Errcode      string `json:"errcode"`
	Msg          string `json:"error"`
	RetryAfterMS int64  `json:"retry_after_ms"`
	Body         string
}

func (e *mxError) Error() string { return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Errcode, e.Body) }

func newClient(base string) *mxClient {
	return &mxClient{base: base, hc: &http.Client{Timeout: 20 * time.Second}}
}

// do sends body (JSON-encoded when not nil) and decodes a 2xx answer into
// out. Non-2xx answers are *mxError.
func (c *mxClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode/100 != 2 {
		e := &mxError{Status: res.StatusCode, Body: string(b)}
		json.Unmarshal(b, e)
		return e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode %q: %w", method, path, b, err)
		}
	}
	return nil
}

// register creates a user with m.login.dummy (following the UIA session
// dance if the server asks for it) and keeps its token.
func (c *mxClient) register(ctx context.Context, user string) error {
	req := map[string]any{"username": user, "password": "pw-" + user + "-long-enough",
		"auth": map[string]any{"type": "m.login.dummy"}}
	var res struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	err := c.do(ctx, "POST", "/_matrix/client/v3/register", req, &res)
	if e, ok := err.(*mxError); ok && e.Status == 401 {
		var uia struct {
			Session string `json:"session"`
		}
		json.Unmarshal([]byte(e.Body), &uia)
		req["auth"] = map[string]any{"type": "m.login.dummy", "session": uia.Session}
		err = c.do(ctx, "POST", "/_matrix/client/v3/register", req, &res)
	}
	if err != nil {
		return fmt.Errorf("register %s: %w", user, err)
	}
	c.userID, c.token = res.UserID, res.AccessToken
	return nil
}

// pathEscape escapes one path segment (room IDs, event IDs, user IDs).
func pathEscape(s string) string { return url.PathEscape(s) }

// roomPath is /_matrix/client/v3/rooms/{roomID} followed by rest.
func roomPath(roomID string, rest ...string) string {
	parts := []string{"/_matrix/client/v3/rooms", pathEscape(roomID)}
	for _, r := range rest {
		parts = append(parts, pathEscape(r))
	}
	return strings.Join(parts, "/")
}
