package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"hearth/p2p/host"
)

// demoMain runs `hearth demo`: N peers in this process on loopback, one
// user each, all in one room, with federation over libp2p and no internet.
// It prints how to reach each peer and serves until interrupted.
func demoMain(args []string) int {
	fs := flag.NewFlagSet("hearth demo", flag.ContinueOnError)
	peers := fs.Int("peers", 3, "how many peers to start (2 to 20)")
	data := fs.String("data", "", "data directory (default: a new temporary one, removed at exit)")
	httpBase := fs.Int("http-port", 8101, "HTTP port of the first peer; the others follow (0: free ports)")
	once := fs.Bool("once", false, "stop after showing federation working (for scripts and tests)")
	level := fs.String("log-level", "warn", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lvl slog.Level
	if *peers < 2 || *peers > 20 || lvl.UnmarshalText([]byte(*level)) != nil {
		fmt.Fprintln(os.Stderr, "hearth demo: --peers must be 2 to 20 and --log-level debug, info, warn or error")
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(log)
	if *data == "" {
		dir, err := os.MkdirTemp("", "hearth-demo-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "hearth demo:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		*data = dir
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := demo(ctx, *peers, *data, *httpBase, *once, log); err != nil {
		fmt.Fprintln(os.Stderr, "hearth demo:", err)
		return 1
	}
	return 0
}

func demo(ctx context.Context, n int, data string, httpBase int, once bool, log *slog.Logger) error {
	var ps []*peer
	defer func() {
		for _, p := range ps {
			p.close(log)
		}
	}()
	for i := range n {
		opts := &options{
			Data:  filepath.Join(data, fmt.Sprintf("peer%d", i)),
			HTTP:  fmt.Sprintf("127.0.0.1:%d", httpBase+min(httpBase, 1)*i),
			P2P:   []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/0/ws"},
			Relay: host.DefaultRelayLimits(),
			// Peers find each other through the first: no LAN traffic.
			NoMDNS: true,
		}
		if i > 0 {
			opts.Bootstrap = []string{ps[0].host.Addrs()[0].String()}
		}
		p, err := startPeer(ctx, opts, log)
		if err != nil {
			return fmt.Errorf("peer %d: %w", i, err)
		}
		ps = append(ps, p)
	}

	start := time.Now()
	users := make([]*demoUser, n)
	for i, p := range ps {
		u, err := demoRegister(ctx, "http://"+p.addr, fmt.Sprintf("peer%d", i))
		if err != nil {
			return fmt.Errorf("register on peer %d: %w", i, err)
		}
		users[i] = u
	}
	var room struct {
		RoomID string `json:"room_id"`
	}
	if err := users[0].do(ctx, "POST", "/createRoom", map[string]any{"preset": "public_chat", "name": "Hearth demo", "room_alias_name": "demo"}, &room); err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	for i := 1; i < n; i++ {
		path := "/join/" + url.PathEscape(room.RoomID) + "?server_name=" + url.QueryEscape(ps[0].id.ServerName)
		if err := users[i].do(ctx, "POST", path, map[string]any{}, nil); err != nil {
			return fmt.Errorf("peer %d joins: %w", i, err)
		}
	}
	for i, u := range users {
		path := fmt.Sprintf("/rooms/%s/send/m.room.message/demo%d", url.PathEscape(room.RoomID), i)
		if err := u.do(ctx, "PUT", path, map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("hello from peer %d", i)}, nil); err != nil {
			return fmt.Errorf("peer %d sends: %w", i, err)
		}
	}
	// Every peer has every greeting once federation has delivered them.
	for i, u := range users {
		if err := u.waitForMessages(ctx, room.RoomID, n, 30*time.Second); err != nil {
			return fmt.Errorf("peer %d: %w", i, err)
		}
	}

	fmt.Printf("Hearth demo: %d peers federating over libp2p on loopback, no internet needed.\n", n)
	fmt.Printf("Room %s (#demo:%s): every peer has all %d greetings, %s after start.\n\n",
		room.RoomID, ps[0].id.ServerName, n, time.Since(start).Round(time.Millisecond))
	fmt.Printf("%-4s %-24s %-10s %-10s %s\n", "peer", "web app and client API", "user", "password", "server name")
	for i, p := range ps {
		fmt.Printf("%-4d %-24s %-10s %-10s %s\n", i, "http://"+p.addr, fmt.Sprintf("peer%d", i), demoPassword, p.id.ServerName)
	}
	if once {
		return nil
	}
	fmt.Println("\nPoint any Matrix client at a peer's URL and log in. Ctrl-C stops the demo.")
	<-ctx.Done()
	return nil
}

const demoPassword = "hearth-demo"

// demoUser is a logged-in client of one peer, over plain HTTP.
type demoUser struct {
	base, token string
}

func demoRegister(ctx context.Context, base, name string) (*demoUser, error) {
	u := &demoUser{base: base}
	var res struct {
		AccessToken string `json:"access_token"`
	}
	err := u.do(ctx, "POST", "/register", map[string]any{
		"username": name, "password": demoPassword, "auth": map[string]string{"type": "m.login.dummy"},
	}, &res)
	var me *demoError
	if errors.As(err, &me) && me.status == http.StatusBadRequest {
		// Registered in an earlier run on the same --data: log in.
		err = u.do(ctx, "POST", "/login", map[string]any{
			"type": "m.login.password", "password": demoPassword,
			"identifier": map[string]string{"type": "m.id.user", "user": name},
		}, &res)
	}
	u.token = res.AccessToken
	return u, err
}

type demoError struct {
	status int
	body   string
}

func (e *demoError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

func (u *demoUser) do(ctx context.Context, method, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, method, u.base+"/_matrix/client/v3"+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	if u.token != "" {
		req.Header.Set("Authorization", "Bearer "+u.token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	rb, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return &demoError{res.StatusCode, string(rb)}
	}
	if out != nil {
		return json.Unmarshal(rb, out)
	}
	return nil
}

// waitForMessages polls the room's newest messages until want of them are
// there.
func (u *demoUser) waitForMessages(ctx context.Context, roomID string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	got := 0
	for {
		var res struct {
			Chunk []struct {
				Type string `json:"type"`
			} `json:"chunk"`
		}
		path := "/rooms/" + url.PathEscape(roomID) + "/messages?dir=b&limit=100"
		if err := u.do(ctx, "GET", path, nil, &res); err != nil {
			return err
		}
		got = 0
		for _, e := range res.Chunk {
			if e.Type == "m.room.message" {
				got++
			}
		}
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d greetings after %s", got, want, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}
