package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// serve runs one request through the node's handlers in process (fuzzing
// over a socket would be slow) and checks the answer is well formed: no
// 5xx, JSON, and an errcode on every error.
func (n *node) serve(t *testing.T, method, path, token, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	w := httptest.NewRecorder()
	n.mux.ServeHTTP(w, req)
	if w.Code == http.StatusMovedPermanently || w.Code == http.StatusTemporaryRedirect {
		return w // ServeMux cleaning a path with "." or empty segments
	}
	if w.Code >= 500 {
		t.Fatalf("%s %s with %q: %d %s", method, path, body, w.Code, w.Body)
	}
	var out map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s with %q: answer not a JSON object: %s", method, path, body, w.Body)
	}
	if w.Code >= 400 {
		if _, ok := out["errcode"].(string); !ok && w.Code != http.StatusUnauthorized {
			t.Fatalf("%s %s with %q: %d without errcode: %s", method, path, body, w.Code, w.Body)
		}
	}
	return w
}

func FuzzCreateRoom(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"preset":"public_chat","name":"n","topic":"t","room_alias_name":"a"}`,
		`{"room_version":"10","invite":["@x:hearth.test"],"is_direct":true}`,
		`{"room_version":"12","preset":"trusted_private_chat","invite":["@x:y"]}`,
		`{"initial_state":[{"type":"m.room.encryption","content":{"algorithm":"m.megolm.v1.aes-sha2"}}]}`,
		`{"initial_state":[{"type":"m.room.power_levels","content":{"users":{}}}]}`,
		`{"power_level_content_override":{"events_default":100}}`,
		`{"creation_content":{"m.federate":false,"type":"m.space"}}`,
		`{"creation_content":{"additional_creators":["bad"]},"room_version":"12"}`,
		`{"name":1.5}`, `{"topic":"\u0000"}`, `{"initial_state":[{"type":"","content":{}}]}`,
		`{"power_level_content_override":{"users":{"@a:b":1e300}}}`,
		`{"initial_state":[{"type":"x","state_key":"k","content":{"f":1.5}}]}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add(seed)
	}
	n := newNode(f)
	alice := n.register("alice")
	f.Fuzz(func(t *testing.T, body string) {
		before := n.countsFor(t)
		w := n.serve(t, "POST", v3+"/createRoom", alice.token, body)
		if w.Code != 200 {
			if after := n.countsFor(t); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("refused createRoom %q wrote something:\n before %v\n after  %v", body, before, after)
			}
		}
	})
}

func FuzzSendEvent(f *testing.F) {
	for _, seed := range []string{
		`{"msgtype":"m.text","body":"hello"}`,
		`{"body":1.5}`, `{"n":9007199254740993}`, `{"a":{"b":{"c":[1,2,{"d":null}]}}}`,
		`{"body":"\ud800"}`, `{"m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}`,
		`{}`, `[]`, `"x"`, `{`, ``, ` {"a":1} `,
	} {
		f.Add("m.room.message", seed)
	}
	f.Add("m.room.redaction", `{"redacts":"$nope"}`)
	f.Add("", `{}`)
	f.Add("m.room.member", `{"membership":"join"}`)
	n := newNode(f)
	alice := n.register("alice")
	room := n.createRoom(alice, nil)
	txn := 0
	f.Fuzz(func(t *testing.T, typ, body string) {
		txn++
		before := n.countsFor(t)
		path := v3 + "/rooms/" + esc(room) + "/send/" + esc(typ) + "/f" + fmt.Sprint(txn)
		w := n.serve(t, "PUT", path, alice.token, body)
		if w.Code != 200 && w.Code != http.StatusNotFound && w.Code != http.StatusMovedPermanently {
			if after := n.countsFor(t); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("refused send %q %q wrote something:\n before %v\n after  %v", typ, body, before, after)
			}
		}
	})
}

func FuzzPutState(f *testing.F) {
	for _, seed := range [][3]string{
		{"m.room.name", "", `{"name":"x"}`},
		{"m.room.power_levels", "", `{"users":{"@alice:hearth.test":100},"ban":"50"}`},
		{"m.room.join_rules", "", `{"join_rule":"public"}`},
		{"m.room.canonical_alias", "", `{"alias":"#x:hearth.test","alt_aliases":[1]}`},
		{"m.room.member", "@bob:hearth.test", `{"membership":"invite"}`},
		{"org.example", "a/b", `{"x":[]}`},
		{"m.room.history_visibility", "", `{"history_visibility":5}`},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	n := newNode(f)
	alice := n.register("alice")
	room := n.createRoom(alice, nil)
	f.Fuzz(func(t *testing.T, typ, key, body string) {
		path := v3 + "/rooms/" + esc(room) + "/state/" + esc(typ) + "/" + esc(key)
		w := httptest.NewRecorder()
		r, err := http.NewRequest("PUT", path, strings.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		r.Header.Set("Authorization", "Bearer "+alice.token)
		n.mux.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("PUT state %q %q %q: %d %s", typ, key, body, w.Code, w.Body)
		}
		// Whatever happened, the creator still runs the room.
		if w := n.serve(t, "GET", v3+"/rooms/"+esc(room)+"/state/m.room.create/", alice.token, ""); w.Code != 200 {
			t.Fatalf("room unreadable after PUT state %q %q %q: %d %s", typ, key, body, w.Code, w.Body)
		}
	})
}

func FuzzRegisterLogin(f *testing.F) {
	for _, seed := range []string{
		`{"username":"u1","password":"p","auth":{"type":"m.login.dummy"}}`,
		`{"username":"U","auth":{"type":"m.login.dummy"}}`,
		`{"auth":{"type":"m.login.password"}}`,
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"secret-alice"}`,
		`{"type":"m.login.password","user":"@alice:elsewhere","password":"x"}`,
		`{"type":"m.login.password","identifier":{"type":"m.id.phone"}}`,
		`{"username":"` + strings.Repeat("a", 300) + `","auth":{"type":"m.login.dummy"}}`,
		`{}`, `[]`, `{`, ``,
	} {
		f.Add(seed)
	}
	n := newNode(f)
	n.register("alice")
	f.Fuzz(func(t *testing.T, body string) {
		n.serve(t, "POST", v3+"/register", "", body)
		n.serve(t, "POST", v3+"/login", "", body)
	})
}
