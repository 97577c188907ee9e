package testnode

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// Client is a registered user of one node's client API.
type Client struct {
	T      testing.TB
	ID     string // the user ID
	Device string // the device ID registration gave
	Base   string // the client API's URL
	Token  string // the access token
}

// Register registers name on s with the dummy flow (and password, if
// not empty) and returns it logged in.
func (s *Server) Register(t testing.TB, name, password string) *Client {
	t.Helper()
	c := &Client{T: t, Base: s.ClientAPI.URL}
	body := map[string]any{"username": name, "auth": map[string]string{"type": "m.login.dummy"}}
	if password != "" {
		body["password"] = password
	}
	var res struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	c.Do("POST", "/register", body, &res)
	c.ID, c.Token, c.Device = res.UserID, res.AccessToken, res.DeviceID
	return c
}

// Do calls the client API at /_matrix/client/v3+path with body as JSON
// and decodes the answer into out (if not nil); anything but a 200 fails
// the test.
func (c *Client) Do(method, path string, body, out any) {
	c.T.Helper()
	if err := c.Try(method, path, body, out); err != nil {
		c.T.Fatal(err)
	}
}

// Try is Do that returns the failure instead.
func (c *Client) Try(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: encoding the body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.Base+"/_matrix/client/v3"+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}
