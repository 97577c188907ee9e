//go:build js

package main

// The smoke run: outside a browser worker (under Node, as `make test-wasm`
// runs it) the program proves that the core links and runs under js/wasm:
// it opens a node on an in-memory SQLite database (memdb), registers a
// user, creates a room, sends a message and reads it back through the
// node's own HTTP handler, then closes the node.

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"time"

	"hearth/node"
	"hearth/node/storage"
	"hearth/p2p/identity"
)

func smoke() error {
	start := time.Now()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	id, err := identity.New(priv)
	if err != nil {
		return err
	}
	n, err := node.New(node.Config{
		ServerName: id.ServerName,
		KeyID:      identity.KeyID,
		PrivateKey: id.Private,
		// memdb cannot hold a WAL file. Opened shared (not Exclusive), it
		// has no shared-memory index either, so SQLite keeps it in its own
		// in-memory journal mode and the node's WAL pragma is a no-op.
		DB:               storage.Options{Path: "/hearth.db", VFS: "memdb"},
		OpenRegistration: true,
		Logger:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	fmt.Printf("hearth node %s started in %s\n", n.ServerName(), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	err = chat(n.Handler())
	if err == nil {
		fmt.Printf("register, create room, send and read back: %s\n", time.Since(start).Round(time.Millisecond))
	}
	if cerr := n.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close node: %w", cerr)
	}
	return err
}

// chat drives the node's client API in-process, as the service worker
// will: no sockets, just the http.Handler.
func chat(h http.Handler) error {
	var reg struct {
		AccessToken string `json:"access_token"`
	}
	if err := call(h, "POST", "/_matrix/client/v3/register", "", map[string]any{
		"username": "wasm", "password": "wasm-smoke-password", "auth": map[string]any{"type": "m.login.dummy"},
	}, &reg); err != nil {
		return err
	}
	var room struct {
		RoomID string `json:"room_id"`
	}
	if err := call(h, "POST", "/_matrix/client/v3/createRoom", reg.AccessToken, map[string]any{"name": "wasm"}, &room); err != nil {
		return err
	}
	roomPath := "/_matrix/client/v3/rooms/" + url.PathEscape(room.RoomID)
	var sent struct {
		EventID string `json:"event_id"`
	}
	if err := call(h, "PUT", roomPath+"/send/m.room.message/1", reg.AccessToken,
		map[string]any{"msgtype": "m.text", "body": "hello from js/wasm"}, &sent); err != nil {
		return err
	}
	var got struct {
		Content struct {
			Body string `json:"body"`
		} `json:"content"`
	}
	if err := call(h, "GET", roomPath+"/event/"+url.PathEscape(sent.EventID), reg.AccessToken, nil, &got); err != nil {
		return err
	}
	if got.Content.Body != "hello from js/wasm" {
		return fmt.Errorf("read back %q", got.Content.Body)
	}
	return nil
}

// call serves one request with h and decodes a 200 answer into out.
func call(h http.Handler, method, path, token string, body, out any) error {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return err
		}
	}
	req := httptest.NewRequest(method, path, bytes.NewReader(b))
	req.RemoteAddr = "127.0.0.1:1" // as a loopback client
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d %s", method, path, rec.Code, rec.Body.Bytes())
	}
	if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
		return fmt.Errorf("%s %s: decode: %w", method, path, err)
	}
	return nil
}
