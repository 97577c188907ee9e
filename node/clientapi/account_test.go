package clientapi_test

import (
	"strings"
	"testing"

	"hearth/node/clientapi"
)

func TestVersionsAndCapabilities(t *testing.T) {
	n := newNode(t)
	r := n.ok("GET", "/_matrix/client/versions", "", nil)
	vs, _ := r.body["versions"].([]any)
	if !contains(vs, "v1.12") || !contains(vs, "r0.6.1") {
		t.Fatalf("versions: %s", r.raw)
	}
	u := n.register("alice")
	r = n.ok("GET", v3+"/capabilities", u.token, nil)
	rv := r.body["capabilities"].(map[string]any)["m.room_versions"].(map[string]any)
	if rv["default"] != "12" {
		t.Fatalf("default room version: %s", r.raw)
	}
	avail := rv["available"].(map[string]any)
	for _, v := range []string{"10", "11", "12"} {
		if avail[v] != "stable" {
			t.Fatalf("room version %s not stable: %s", v, r.raw)
		}
	}
	// r0 paths answer too.
	n.ok("GET", "/_matrix/client/r0/account/whoami", u.token, nil)

	// CORS preflight, for clients running in a page of another origin.
	pre := n.do("OPTIONS", v3+"/createRoom", "", nil)
	if pre.status != 200 || pre.header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(pre.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", pre.status, pre.header)
	}
}

func TestSyncMounted(t *testing.T) {
	n := newNode(t)
	u := n.register("alice")
	n.expect(401, "M_MISSING_TOKEN", "GET", v3+"/sync", "", nil)
	n.expect(401, "M_UNKNOWN_TOKEN", "GET", v3+"/sync", "nope", nil)
	if r := n.ok("GET", v3+"/sync?timeout=0", u.token, nil); r.str("user") != u.id || r.str("device") != u.device {
		t.Fatalf("sync did not get the device: %s", r.raw)
	}
	r := n.ok("GET", v3+"/rooms/"+esc("!r:x")+"/context/"+esc("$e"), u.token, nil)
	if r.str("room") != "!r:x" || r.str("event") != "$e" {
		t.Fatalf("context path values: %s", r.raw)
	}
	n.ok("GET", "/_matrix/client/r0/rooms/"+esc("!r:x")+"/messages", u.token, nil)
}

func contains(xs []any, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func TestRegisterFlow(t *testing.T) {
	n := newNode(t)
	// Without auth: the user-interactive 401 with flows and a session.
	r := n.expect(401, "", "POST", v3+"/register", "", map[string]any{"username": "bob", "password": "pw"})
	session := r.str("session")
	flows, _ := r.body["flows"].([]any)
	if session == "" || len(flows) != 1 || !strings.Contains(string(r.raw), "m.login.dummy") {
		t.Fatalf("register challenge: %s", r.raw)
	}
	r = n.ok("POST", v3+"/register", "", map[string]any{
		"username": "bob", "password": "pw", "initial_device_display_name": "phone",
		"auth": map[string]any{"type": "m.login.dummy", "session": session},
	})
	if r.str("user_id") != "@bob:"+server || r.str("access_token") == "" || r.str("device_id") == "" {
		t.Fatalf("register: %s", r.raw)
	}
	tok := r.str("access_token")
	who := n.ok("GET", v3+"/account/whoami", tok, nil)
	if who.str("user_id") != "@bob:"+server || who.str("device_id") != r.str("device_id") {
		t.Fatalf("whoami: %s", who.raw)
	}
	// The access_token query parameter works as well.
	n.ok("GET", v3+"/account/whoami?access_token="+tok, "", nil)

	dummy := map[string]string{"type": "m.login.dummy"}
	n.expect(400, "M_USER_IN_USE", "POST", v3+"/register", "", map[string]any{"username": "bob", "auth": dummy})
	n.expect(400, "M_USER_IN_USE", "GET", v3+"/register/available?username=bob", "", nil)
	n.ok("GET", v3+"/register/available?username=carol", "", nil)
	for _, bad := range []string{"Bob", "bo b", "bob:x", "bø"} {
		n.expect(400, "M_INVALID_USERNAME", "POST", v3+"/register", "", map[string]any{"username": bad, "auth": dummy})
	}
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/register?kind=guest", "", map[string]any{})

	// inhibit_login: an account, no device.
	r = n.ok("POST", v3+"/register", "", map[string]any{"username": "quiet", "inhibit_login": true, "auth": dummy})
	if r.str("user_id") != "@quiet:"+server || r.body["access_token"] != nil {
		t.Fatalf("inhibit_login: %s", r.raw)
	}
	// No username: one is made up.
	r = n.ok("POST", v3+"/register", "", map[string]any{"auth": dummy})
	if !strings.HasPrefix(r.str("user_id"), "@") || r.str("access_token") == "" {
		t.Fatalf("generated username: %s", r.raw)
	}
	// A new account has the default push rules as account data.
	c := n.counts()
	if c["account_data"] < 3 {
		t.Fatalf("push rules not stored at registration: %v", c)
	}
}

func TestClosedRegistration(t *testing.T) {
	n := newNode(t, func(c *clientapi.Config) { c.OpenRegistration = false })
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/register", "", map[string]any{
		"username": "x", "auth": map[string]string{"type": "m.login.dummy"},
	})
}

func TestLoginLogoutDevices(t *testing.T) {
	n := newNode(t)
	u := n.register("alice")

	n.ok("GET", v3+"/login", "", nil)
	// identifier form, legacy user form, and a full user ID.
	l1 := n.ok("POST", v3+"/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"},
		"password": "secret-alice", "initial_device_display_name": "laptop",
	})
	l2 := n.ok("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "@alice:" + server, "password": "secret-alice"})
	if l1.str("user_id") != u.id || l1.str("device_id") == l2.str("device_id") {
		t.Fatalf("logins: %s %s", l1.raw, l2.raw)
	}
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "wrong"})
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "nobody", "password": "x"})
	n.expect(400, "M_UNKNOWN", "POST", v3+"/login", "", map[string]any{"type": "m.login.token", "token": "x"})

	devs := n.ok("GET", v3+"/devices", u.token, nil).body["devices"].([]any)
	if len(devs) != 3 {
		t.Fatalf("want 3 devices, got %v", devs)
	}
	d1 := l1.str("device_id")
	if got := n.ok("GET", v3+"/devices/"+d1, u.token, nil); got.str("display_name") != "laptop" {
		t.Fatalf("device: %s", got.raw)
	}
	n.ok("PUT", v3+"/devices/"+d1, u.token, map[string]string{"display_name": "work laptop"})
	if got := n.ok("GET", v3+"/devices/"+d1, u.token, nil); got.str("display_name") != "work laptop" {
		t.Fatalf("renamed device: %s", got.raw)
	}
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/devices/NOPE", u.token, nil)
	n.expect(404, "M_NOT_FOUND", "PUT", v3+"/devices/NOPE", u.token, map[string]string{"display_name": "x"})

	// Deleting a device needs the password (user-interactive auth).
	r := n.expect(401, "", "DELETE", v3+"/devices/"+d1, u.token, nil)
	session := r.str("session")
	if session == "" || !strings.Contains(string(r.raw), "m.login.password") {
		t.Fatalf("delete device challenge: %s", r.raw)
	}
	r = n.expect(401, "M_FORBIDDEN", "DELETE", v3+"/devices/"+d1, u.token, map[string]any{"auth": map[string]any{
		"type": "m.login.password", "session": session, "password": "wrong",
		"identifier": map[string]string{"type": "m.id.user", "user": u.id},
	}})
	n.ok("DELETE", v3+"/devices/"+d1, u.token, map[string]any{"auth": map[string]any{
		"type": "m.login.password", "session": r.str("session"), "password": "secret-alice",
		"identifier": map[string]string{"type": "m.id.user", "user": u.id},
	}})
	// The deleted device's token is dead at once (the cache forgot it).
	r = n.expect(401, "M_UNKNOWN_TOKEN", "GET", v3+"/account/whoami", l1.str("access_token"), nil)
	if r.body["soft_logout"] != false {
		t.Fatalf("soft_logout missing: %s", r.raw)
	}

	// Logging in again with a known device ID replaces its token.
	l3 := n.ok("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "secret-alice", "device_id": l2.str("device_id")})
	if l3.str("device_id") != l2.str("device_id") {
		t.Fatalf("device_id not reused: %s", l3.raw)
	}
	n.expect(401, "M_UNKNOWN_TOKEN", "GET", v3+"/account/whoami", l2.str("access_token"), nil)
	n.ok("GET", v3+"/account/whoami", l3.str("access_token"), nil)

	// /logout ends one device; /logout/all every one.
	n.ok("POST", v3+"/logout", l3.str("access_token"), nil)
	n.expect(401, "M_UNKNOWN_TOKEN", "GET", v3+"/account/whoami", l3.str("access_token"), nil)
	n.ok("GET", v3+"/account/whoami", u.token, nil)
	l4 := n.ok("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "secret-alice"})
	n.ok("POST", v3+"/logout/all", u.token, nil)
	n.expect(401, "M_UNKNOWN_TOKEN", "GET", v3+"/account/whoami", u.token, nil)
	n.expect(401, "M_UNKNOWN_TOKEN", "GET", v3+"/account/whoami", l4.str("access_token"), nil)
	if c := n.counts(); c["devices"] != 0 {
		t.Fatalf("devices left after logout/all: %d", c["devices"])
	}
}

func TestChangePassword(t *testing.T) {
	n := newNode(t)
	u := n.register("alice")
	other := n.ok("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "secret-alice"})
	n.expect(401, "", "POST", v3+"/account/password", u.token, map[string]any{"new_password": "new"})
	n.ok("POST", v3+"/account/password", u.token, map[string]any{"new_password": "new", "auth": map[string]any{
		"type": "m.login.password", "user": "alice", "password": "secret-alice",
	}})
	// Other devices are logged out; this one stays.
	n.expect(401, "M_UNKNOWN_TOKEN", "GET", v3+"/account/whoami", other.str("access_token"), nil)
	n.ok("GET", v3+"/account/whoami", u.token, nil)
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "secret-alice"})
	n.ok("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "new"})
}

func TestRateLimit(t *testing.T) {
	n := newNode(t, func(c *clientapi.Config) { c.RateLimit = clientapi.RateLimit{PerSecond: 0.01, Burst: 2} })
	body := map[string]any{"type": "m.login.password", "user": "nobody", "password": "x"}
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/login", "", body)
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/login", "", body)
	r := n.expect(429, "M_LIMIT_EXCEEDED", "POST", v3+"/login", "", body)
	if ms, _ := r.body["retry_after_ms"].(float64); ms <= 0 {
		t.Fatalf("retry_after_ms missing: %s", r.raw)
	}
	if r.header.Get("Retry-After") == "" {
		t.Fatalf("Retry-After header missing")
	}
	n.expect(429, "M_LIMIT_EXCEEDED", "POST", v3+"/register", "", map[string]any{})
}

func TestFiltersAndAccountData(t *testing.T) {
	n := newNode(t)
	u := n.register("alice")
	v := n.register("bob")
	base := v3 + "/user/" + esc(u.id)

	r := n.ok("POST", base+"/filter", u.token, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 10}}})
	id := r.str("filter_id")
	if id == "" {
		t.Fatalf("filter: %s", r.raw)
	}
	got := n.ok("GET", base+"/filter/"+id, u.token, nil)
	if !strings.Contains(string(got.raw), `"limit":10`) {
		t.Fatalf("filter round trip: %s", got.raw)
	}
	n.expect(404, "M_NOT_FOUND", "GET", base+"/filter/999", u.token, nil)
	n.expect(404, "M_NOT_FOUND", "GET", base+"/filter/abc", u.token, nil)
	n.expect(403, "M_FORBIDDEN", "GET", base+"/filter/"+id, v.token, nil)
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/user/"+esc(v.id)+"/filter/"+id, v.token, nil) // filter IDs are per user
	n.expect(400, "M_BAD_JSON", "POST", base+"/filter", u.token, `[1]`)
	n.expect(400, "M_BAD_JSON", "POST", base+"/filter", u.token, `{"room": 5}`)
	n.expect(400, "M_NOT_JSON", "POST", base+"/filter", u.token, `{"room":`)

	n.ok("PUT", base+"/account_data/m.direct", u.token, map[string]any{"@bob:x": []string{"!r:x"}})
	got = n.ok("GET", base+"/account_data/m.direct", u.token, nil)
	if _, ok := got.body["@bob:x"]; !ok {
		t.Fatalf("account data: %s", got.raw)
	}
	n.ok("PUT", base+"/rooms/"+esc("!room:x")+"/account_data/m.tag", u.token, map[string]any{"tags": map[string]any{}})
	n.ok("GET", base+"/rooms/"+esc("!room:x")+"/account_data/m.tag", u.token, nil)
	n.expect(404, "M_NOT_FOUND", "GET", base+"/account_data/nothing.here", u.token, nil)
	n.expect(403, "M_FORBIDDEN", "GET", base+"/account_data/m.direct", v.token, nil)
	n.expect(403, "M_FORBIDDEN", "PUT", base+"/account_data/m.direct", v.token, map[string]any{})
	n.expect(405, "M_BAD_JSON", "PUT", base+"/account_data/m.push_rules", u.token, map[string]any{})
	n.expect(400, "M_INVALID_PARAM", "PUT", base+"/rooms/notaroom/account_data/m.tag", u.token, map[string]any{})

	n.mu.Lock()
	defer n.mu.Unlock()
	seen := 0
	for _, e := range n.accountData {
		if strings.HasPrefix(e, u.id+" ") {
			seen++
		}
	}
	if seen < 3 { // push rules at registration, m.direct, m.tag
		t.Fatalf("OnAccountData calls: %v", n.accountData)
	}
}

func TestPushRules(t *testing.T) {
	n := newNode(t)
	u := n.register("alice")
	r := n.ok("GET", v3+"/pushrules/", u.token, nil)
	global := r.body["global"].(map[string]any)
	var ids []string
	for _, kind := range []string{"override", "content", "underride"} {
		for _, rule := range global[kind].([]any) {
			ids = append(ids, rule.(map[string]any)["rule_id"].(string))
		}
	}
	want := []string{".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
		".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
		".m.rule.tombstone", ".m.rule.reaction", ".m.rule.server_acl", ".m.rule.suppress_edits",
		".m.rule.contains_user_name",
		".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"}
	if strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Fatalf("default rules:\n got %v\nwant %v", ids, want)
	}
	n.ok("GET", v3+"/pushrules/global/", u.token, nil)

	rule := v3 + "/pushrules/global/override/.m.rule.suppress_notices"
	n.ok("GET", rule, u.token, nil)
	n.ok("PUT", rule+"/enabled", u.token, map[string]bool{"enabled": false})
	if got := n.ok("GET", rule+"/enabled", u.token, nil); got.body["enabled"] != false {
		t.Fatalf("disable rule: %s", got.raw)
	}
	n.ok("PUT", rule+"/actions", u.token, map[string]any{"actions": []string{"notify"}})
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/pushrules/global/override/nope", u.token, nil)
	n.expect(400, "M_INVALID_PARAM", "GET", v3+"/pushrules/global/sideways/x", u.token, nil)

	// A user rule goes after the master rule, and can be deleted.
	n.ok("PUT", v3+"/pushrules/global/override/mine", u.token, map[string]any{
		"actions": []string{"notify"}, "conditions": []any{map[string]string{"kind": "event_match", "key": "type", "pattern": "x"}},
	})
	r = n.ok("GET", v3+"/pushrules/global/", u.token, nil)
	ov := r.body["override"].([]any)
	if ov[1].(map[string]any)["rule_id"] != "mine" {
		t.Fatalf("user rule position: %s", r.raw)
	}
	n.expect(400, "M_INVALID_PARAM", "PUT", v3+"/pushrules/global/override/.m.rule.mine", u.token, map[string]any{"actions": []string{}})
	n.expect(403, "M_FORBIDDEN", "DELETE", rule, u.token, nil)
	n.ok("DELETE", v3+"/pushrules/global/override/mine", u.token, nil)
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/pushrules/global/override/mine", u.token, nil)
}

func TestProfile(t *testing.T) {
	n := newNode(t)
	u := n.register("alice")
	v := n.register("bob")
	p := v3 + "/profile/" + esc(u.id)
	if got := n.ok("GET", p, "", nil); got.str("displayname") != "alice" {
		t.Fatalf("default display name: %s", got.raw)
	}
	room := n.createRoom(u, nil)
	n.ok("PUT", p+"/displayname", u.token, map[string]string{"displayname": "Alice A."})
	n.ok("PUT", p+"/avatar_url", u.token, map[string]string{"avatar_url": "mxc://hearth.test/abc"})
	if got := n.ok("GET", p+"/displayname", "", nil); got.str("displayname") != "Alice A." {
		t.Fatalf("display name: %s", got.raw)
	}
	if got := n.ok("GET", p, "", nil); got.str("avatar_url") != "mxc://hearth.test/abc" {
		t.Fatalf("profile: %s", got.raw)
	}
	// The member event in joined rooms follows the profile.
	m := n.state(u, room, "m.room.member", u.id)
	if m["displayname"] != "Alice A." || m["avatar_url"] != "mxc://hearth.test/abc" {
		t.Fatalf("member event not updated: %v", m)
	}
	n.expect(403, "M_FORBIDDEN", "PUT", p+"/displayname", v.token, map[string]string{"displayname": "x"})
	n.expect(400, "M_INVALID_PARAM", "PUT", p+"/avatar_url", u.token, map[string]string{"avatar_url": "http://x"})
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/profile/"+esc("@nobody:"+server), "", nil)
}
