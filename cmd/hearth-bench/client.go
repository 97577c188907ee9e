package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// client is one Matrix user talking to the node over keep-alive HTTP.
type client struct {
	base   string
	hc     *http.Client
	token  string
	userID string
	// retries counts answers of 429 M_LIMIT_EXCEEDED that were retried.
	retries *atomic.Int64
}

// newHTTPClient is shared by all users so connections are pooled; the pool
// is large enough that concurrent senders never wait for a connection.
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// apiError is a non-2xx answer from the node.
type apiError struct {
	Method, Path string
	Status       int
	Errcode      string `json:"errcode"`
	Message      string `json:"error"`
	RetryAfterMS int64  `json:"retry_after_ms"`
	Body         []byte `json:"-"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d %s %s", e.Method, e.Path, e.Status, e.Errcode, e.Message)
}

// do sends body as JSON (when not nil) and decodes a 2xx answer into out.
// A 429 is retried after the time the node asks for.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("%s %s: encode: %w", method, path, err)
		}
	}
	for {
		err := c.once(ctx, method, path, payload, out)
		var ae *apiError
		if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests {
			return err
		}
		c.retries.Add(1)
		wait := time.Duration(max(ae.RetryAfterMS, 5)) * time.Millisecond
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *client) once(ctx context.Context, method, path string, payload []byte, out any) error {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	// Read the whole body so the connection goes back to the pool.
	b, err := readBody(res)
	if err != nil {
		return fmt.Errorf("%s %s: read: %w", method, path, err)
	}
	if res.StatusCode/100 != 2 {
		e := &apiError{Method: method, Path: path, Status: res.StatusCode, Body: b}
		if json.Unmarshal(b, e) != nil {
			e.Message = strings.TrimSpace(string(b))
		}
		return e
	}
	if d, ok := out.(bodyDecoder); ok {
		err = d.decodeBody(b)
	} else if out != nil {
		err = json.Unmarshal(b, out)
	}
	if err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// readBody reads a whole answer, into one allocation of the announced
// length when there is one (io.ReadAll would grow a buffer from 512
// bytes, copying a 40 KB page a dozen times).
func readBody(res *http.Response) ([]byte, error) {
	if n := res.ContentLength; n >= 0 && n <= 64<<20 {
		b := make([]byte, n)
		if _, err := io.ReadFull(res.Body, b); err != nil {
			return nil, err
		}
		// Reach EOF, so the connection is reused.
		_, err := io.Copy(io.Discard, res.Body)
		return b, err
	}
	return io.ReadAll(res.Body)
}

// register creates the user with m.login.dummy, following the
// user-interactive auth session if the node asks for one.
func (c *client) register(ctx context.Context, user string) error {
	req := map[string]any{
		"username": user, "password": "bench-" + user + "-password",
		"auth": map[string]any{"type": "m.login.dummy"},
	}
	var res struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	err := c.do(ctx, "POST", "/_matrix/client/v3/register", req, &res)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		// The 401 body carries the UIA session; ask again with it.
		var uia struct {
			Session string `json:"session"`
		}
		_ = json.Unmarshal(ae.Body, &uia)
		req["auth"] = map[string]any{"type": "m.login.dummy", "session": uia.Session}
		err = c.do(ctx, "POST", "/_matrix/client/v3/register", req, &res)
	}
	if err != nil {
		return fmt.Errorf("register %s: %w", user, err)
	}
	c.userID, c.token = res.UserID, res.AccessToken
	return nil
}

// send sends an m.text message with a transaction ID and returns its
// event ID.
func (c *client) send(ctx context.Context, roomID, txn, body string) (string, error) {
	var res struct {
		EventID string `json:"event_id"`
	}
	err := c.do(ctx, "PUT", roomPath(roomID, "send", "m.room.message", txn),
		map[string]any{"msgtype": "m.text", "body": body}, &res)
	if err == nil && res.EventID == "" {
		err = fmt.Errorf("send %s: answer has no event_id", txn)
	}
	return res.EventID, err
}

// syncResponse is the part of a /sync answer the bench reads.
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []event `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

type event struct {
	EventID string `json:"event_id"`
	Type    string `json:"type"`
	Content struct {
		Body string `json:"body"`
	} `json:"content"`
}

// sync runs one /sync; since "" is an initial sync.
func (c *client) sync(ctx context.Context, since string, timeout time.Duration) (*syncResponse, error) {
	q := url.Values{"timeout": {fmt.Sprint(timeout.Milliseconds())}}
	if since != "" {
		q.Set("since", since)
	}
	var res syncResponse
	if err := c.do(ctx, "GET", "/_matrix/client/v3/sync?"+q.Encode(), nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// roomPath is /_matrix/client/v3/rooms/{roomID}/rest..., each part escaped.
func roomPath(roomID string, rest ...string) string {
	var b strings.Builder
	b.WriteString("/_matrix/client/v3/rooms/")
	b.WriteString(url.PathEscape(roomID))
	for _, r := range rest {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(r))
	}
	return b.String()
}
