package clientapi_test

import (
	"fmt"
	"strings"
	"testing"

	"hearth/node/clientapi"
)

// TestBadInput sends malformed or unauthorised requests and checks each
// gets the spec's error and status, and that none writes anything.
func TestBadInput(t *testing.T) {
	n := newNode(t, func(c *clientapi.Config) { c.RateLimit = clientapi.RateLimit{PerSecond: 0.001, Burst: 10} })
	alice, bob := n.register("alice"), n.register("bob")
	room := n.createRoom(alice, map[string]any{"name": "r"})
	r := v3 + "/rooms/" + esc(room)
	msg := r + "/send/m.room.message/"

	big := func(n int) string { return `{"msgtype":"m.text","body":"` + strings.Repeat("x", n) + `"}` }
	for _, tc := range []struct {
		name         string
		method, path string
		token        string
		body         any
		status       int
		code         string
		repeat       int // send this many times; check the last answer
	}{
		{"not json", "PUT", msg + "a", alice.token, `{"body": `, 400, "M_NOT_JSON", 0},
		{"not json at all", "POST", v3 + "/createRoom", alice.token, `hello`, 400, "M_NOT_JSON", 0},
		{"event content not an object", "PUT", msg + "b", alice.token, `["a"]`, 400, "M_BAD_JSON", 0},
		{"wrong field type", "POST", v3 + "/createRoom", alice.token, `{"invite": "bob"}`, 400, "M_BAD_JSON", 0},
		{"state content not an object", "PUT", r + "/state/m.room.topic", alice.token, `"x"`, 400, "M_BAD_JSON", 0},
		{"login body of wrong shape", "POST", v3 + "/login", "", `{"type": 1}`, 400, "M_BAD_JSON", 0},
		{"missing token", "GET", v3 + "/account/whoami", "", nil, 401, "M_MISSING_TOKEN", 0},
		{"missing token on send", "PUT", msg + "c", "", `{}`, 401, "M_MISSING_TOKEN", 0},
		{"unknown token", "GET", v3 + "/joined_rooms", "hth_not_a_token", nil, 401, "M_UNKNOWN_TOKEN", 0},
		{"send by non-member", "PUT", msg + "d", bob.token, `{"body":"x"}`, 403, "M_FORBIDDEN", 0},
		{"state by non-member", "PUT", r + "/state/m.room.topic", bob.token, `{"topic":"x"}`, 403, "M_FORBIDDEN", 0},
		{"other user's account data", "PUT", v3 + "/user/" + esc(alice.id) + "/account_data/x", bob.token, `{}`, 403, "M_FORBIDDEN", 0},
		{"wrong password", "POST", v3 + "/login", "", `{"type":"m.login.password","user":"alice","password":"no"}`, 403, "M_FORBIDDEN", 0},
		{"unknown room", "PUT", v3 + "/rooms/" + esc("!nowhere:"+server) + "/send/m.room.message/e", alice.token, `{}`, 404, "M_NOT_FOUND", 0},
		{"unknown room state", "GET", v3 + "/rooms/" + esc("!nowhere:"+server) + "/state", alice.token, nil, 404, "M_NOT_FOUND", 0},
		{"unknown filter", "GET", v3 + "/user/" + esc(alice.id) + "/filter/77", alice.token, nil, 404, "M_NOT_FOUND", 0},
		{"unknown alias", "GET", v3 + "/directory/room/" + esc("#none:"+server), "", nil, 404, "M_NOT_FOUND", 0},
		{"unknown endpoint", "GET", v3 + "/no/such/thing", alice.token, nil, 404, "M_UNRECOGNIZED", 0},
		{"unknown version", "GET", "/_matrix/client/v9/sync", alice.token, nil, 404, "M_UNRECOGNIZED", 0},
		{"wrong method", "GET", msg + "f", alice.token, nil, 405, "M_UNRECOGNIZED", 0},
		{"wrong method on createRoom", "PUT", v3 + "/createRoom", alice.token, `{}`, 405, "M_UNRECOGNIZED", 0},
		{"event over 64 KiB", "PUT", msg + "g", alice.token, big(70 << 10), 413, "M_TOO_LARGE", 0},
		{"event just over the limit once signed", "PUT", msg + "h", alice.token, big(65400), 413, "M_TOO_LARGE", 0},
		{"state over 64 KiB", "PUT", r + "/state/m.room.topic", alice.token, `{"topic":"` + strings.Repeat("t", 70<<10) + `"}`, 413, "M_TOO_LARGE", 0},
		{"body over 1 MiB", "POST", v3 + "/createRoom", alice.token, `{"name":"` + strings.Repeat("n", 2<<20) + `"}`, 413, "M_TOO_LARGE", 0},
		{"unsupported room version", "POST", v3 + "/createRoom", alice.token, `{"room_version":"1"}`, 400, "M_UNSUPPORTED_ROOM_VERSION", 0},
		{"user in use", "POST", v3 + "/register", "", `{"username":"alice","auth":{"type":"m.login.dummy"}}`, 400, "M_USER_IN_USE", 0},
		{"invalid username", "POST", v3 + "/register", "", `{"username":"A!","auth":{"type":"m.login.dummy"}}`, 400, "M_INVALID_USERNAME", 0},
		{"rate limited", "POST", v3 + "/login", "", `{"type":"m.login.password","user":"alice","password":"no"}`, 429, "M_LIMIT_EXCEEDED", 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := n.counts()
			var got resp
			for i := 0; i <= tc.repeat; i++ {
				got = n.do(tc.method, tc.path, tc.token, tc.body)
			}
			if got.status != tc.status || got.str("errcode") != tc.code {
				t.Fatalf("want %d %s, got %d: %.300s", tc.status, tc.code, got.status, got.raw)
			}
			if got.str("error") == "" {
				t.Fatalf("no error message: %s", got.raw)
			}
			if tc.code == "M_LIMIT_EXCEEDED" {
				if ms, _ := got.body["retry_after_ms"].(float64); ms <= 0 {
					t.Fatalf("retry_after_ms missing: %s", got.raw)
				}
			}
			if tc.code == "M_UNKNOWN_TOKEN" || tc.code == "M_MISSING_TOKEN" {
				if got.body["soft_logout"] != false {
					t.Fatalf("soft_logout missing: %s", got.raw)
				}
			}
			if after := n.counts(); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("refused request wrote something:\n before %v\n after  %v", before, after)
			}
		})
	}
	// The room is unharmed: alice can still send and read its state.
	n.send(alice, room, "after", map[string]any{"msgtype": "m.text", "body": "still fine"})
	if n.state(alice, room, "m.room.name", "")["name"] != "r" {
		t.Fatal("room state changed")
	}
}
