package clientapi_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestCreateRoomPresets(t *testing.T) {
	n := newNode(t)
	alice := n.register("alice")
	bob := n.register("bob")

	for _, tc := range []struct {
		version, preset string
		joinRule        string
		guest           bool
	}{
		{"10", "private_chat", "invite", true},
		{"11", "public_chat", "public", false},
		{"12", "trusted_private_chat", "invite", true},
		{"", "", "invite", true},
	} {
		t.Run(tc.version+"/"+tc.preset, func(t *testing.T) {
			body := map[string]any{
				"name": "Room " + tc.preset, "topic": "about " + tc.preset,
				"invite": []string{bob.id}, "is_direct": true,
				"initial_state": []any{
					map[string]any{"type": "m.room.history_visibility", "content": map[string]string{"history_visibility": "joined"}},
					map[string]any{"type": "org.example.custom", "state_key": "k/with/slash", "content": map[string]int{"n": 1}},
				},
			}
			if tc.version != "" {
				body["room_version"] = tc.version
			}
			if tc.preset != "" {
				body["preset"] = tc.preset
			}
			room := n.createRoom(alice, body)

			create := n.state(alice, room, "m.room.create", "")
			wantVersion := tc.version
			if wantVersion == "" {
				wantVersion = "12"
			}
			if create["room_version"] != wantVersion {
				t.Fatalf("room version: %v", create)
			}
			if got := n.state(alice, room, "m.room.join_rules", "")["join_rule"]; got != tc.joinRule {
				t.Fatalf("join rule %v, want %s", got, tc.joinRule)
			}
			// initial_state replaces the preset's history visibility.
			if got := n.state(alice, room, "m.room.history_visibility", "")["history_visibility"]; got != "joined" {
				t.Fatalf("history visibility: %v", got)
			}
			if got := n.state(alice, room, "org.example.custom", "k/with/slash")["n"]; got != 1.0 {
				t.Fatalf("custom state: %v", got)
			}
			if n.state(alice, room, "m.room.name", "")["name"] != "Room "+tc.preset || n.state(alice, room, "m.room.topic", "")["topic"] != "about "+tc.preset {
				t.Fatal("name or topic missing")
			}
			guest := n.do("GET", v3+"/rooms/"+esc(room)+"/state/m.room.guest_access/", alice.token, nil)
			if (guest.status == 200) != tc.guest {
				t.Fatalf("guest access event: %d %s", guest.status, guest.raw)
			}
			inv := n.state(alice, room, "m.room.member", bob.id)
			if inv["membership"] != "invite" || inv["is_direct"] != true {
				t.Fatalf("invite: %v", inv)
			}
			pl := n.state(alice, room, "m.room.power_levels", "")
			users, _ := pl["users"].(map[string]any)
			if wantVersion == "12" {
				// Creators outrank power levels and must not appear in them.
				if _, ok := users[alice.id]; ok {
					t.Fatalf("v12 creator listed in power levels: %v", pl)
				}
				if tc.preset == "trusted_private_chat" {
					extra, _ := create["additional_creators"].([]any)
					if len(extra) != 1 || extra[0] != bob.id {
						t.Fatalf("trusted invitees should be additional creators: %v", create)
					}
				}
			} else if users[alice.id] != 100.0 {
				t.Fatalf("creator power level: %v", pl)
			}

			// The invitee joins, and both can talk.
			n.ok("POST", v3+"/rooms/"+esc(room)+"/join", bob.token, nil)
			n.send(bob, room, "t1", map[string]any{"msgtype": "m.text", "body": "hi"})
			jm := n.ok("GET", v3+"/rooms/"+esc(room)+"/joined_members", alice.token, nil).body["joined"].(map[string]any)
			if len(jm) != 2 || jm[bob.id].(map[string]any)["display_name"] != "bob" {
				t.Fatalf("joined members: %v", jm)
			}
		})
	}
}

func TestCreateRoomErrors(t *testing.T) {
	n := newNode(t)
	alice := n.register("alice")
	before := n.counts()
	for _, tc := range []struct {
		status int
		code   string
		body   any
	}{
		{400, "M_UNSUPPORTED_ROOM_VERSION", map[string]any{"room_version": "9"}},
		{400, "M_UNSUPPORTED_ROOM_VERSION", map[string]any{"room_version": "nope"}},
		{400, "M_INVALID_PARAM", map[string]any{"preset": "party"}},
		{400, "M_INVALID_PARAM", map[string]any{"visibility": "secret"}},
		{400, "M_INVALID_PARAM", map[string]any{"invite": []string{"not-a-user"}}},
		{400, "M_INVALID_PARAM", map[string]any{"room_alias_name": "a:b"}},
		{400, "M_BAD_JSON", map[string]any{"initial_state": []any{map[string]any{"type": "x", "content": 5}}}},
		{400, "M_BAD_JSON", map[string]any{"initial_state": []any{map[string]any{"type": "m.room.create", "content": map[string]any{}}}}},
		{400, "M_BAD_JSON", map[string]any{"power_level_content_override": map[string]any{"users": map[string]int{alice.id: 50}}}},
		{400, "M_BAD_JSON", map[string]any{"name": 5}},
		{400, "M_NOT_JSON", `{"name": "x"`},
	} {
		t.Run(fmt.Sprint(tc.body), func(t *testing.T) {
			n.expect(tc.status, tc.code, "POST", v3+"/createRoom", alice.token, tc.body)
		})
	}
	if after := n.counts(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a refused createRoom wrote something:\n before %v\n after  %v", before, after)
	}

	// An alias already taken refuses the whole room.
	n.createRoom(alice, map[string]any{"room_alias_name": "taken"})
	before = n.counts()
	n.expect(400, "M_ROOM_IN_USE", "POST", v3+"/createRoom", alice.token, map[string]any{"room_alias_name": "taken"})
	if after := n.counts(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("createRoom with a taken alias wrote something:\n before %v\n after  %v", before, after)
	}
}

func TestMembership(t *testing.T) {
	n := newNode(t)
	alice, bob, carol := n.register("alice"), n.register("bob"), n.register("carol")
	room := n.createRoom(alice, map[string]any{"preset": "public_chat", "room_alias_name": "town"})
	r := esc(room)

	// Join by alias, by ID, twice (the second is a no-op).
	got := n.ok("POST", v3+"/join/"+esc("#town:"+server), bob.token, nil)
	if got.str("room_id") != room {
		t.Fatalf("join by alias: %s", got.raw)
	}
	n.ok("POST", v3+"/join/"+r, bob.token, map[string]any{})
	jr := n.ok("GET", v3+"/joined_rooms", bob.token, nil).body["joined_rooms"].([]any)
	if len(jr) != 1 || jr[0] != room {
		t.Fatalf("joined rooms: %v", jr)
	}
	n.expect(404, "M_NOT_FOUND", "POST", v3+"/join/"+esc("#nowhere:"+server), bob.token, nil)
	n.expect(404, "M_NOT_FOUND", "POST", v3+"/join/"+esc("!unknown:elsewhere"), bob.token, nil)
	n.expect(404, "M_NOT_FOUND", "POST", v3+"/join/"+esc("#town:elsewhere"), bob.token, nil)
	n.expect(400, "M_INVALID_PARAM", "POST", v3+"/join/town", bob.token, nil)

	// Bob (power 0) may not kick; alice may.
	n.ok("POST", v3+"/rooms/"+r+"/join", carol.token, nil)
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/rooms/"+r+"/kick", bob.token, map[string]string{"user_id": carol.id})
	n.ok("POST", v3+"/rooms/"+r+"/kick", alice.token, map[string]string{"user_id": carol.id, "reason": "test"})
	if m := n.state(alice, room, "m.room.member", carol.id); m["membership"] != "leave" || m["reason"] != "test" {
		t.Fatalf("kick: %v", m)
	}
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/rooms/"+r+"/kick", alice.token, map[string]string{"user_id": carol.id})

	// Ban, which keeps carol out, then unban.
	n.ok("POST", v3+"/rooms/"+r+"/ban", alice.token, map[string]string{"user_id": carol.id})
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/rooms/"+r+"/join", carol.token, nil)
	n.ok("POST", v3+"/rooms/"+r+"/unban", alice.token, map[string]string{"user_id": carol.id})
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/rooms/"+r+"/unban", alice.token, map[string]string{"user_id": carol.id})
	n.ok("POST", v3+"/rooms/"+r+"/join", carol.token, nil)
	n.expect(400, "M_MISSING_PARAM", "POST", v3+"/rooms/"+r+"/ban", alice.token, map[string]string{})
	n.expect(400, "M_INVALID_PARAM", "POST", v3+"/rooms/"+r+"/ban", alice.token, map[string]string{"user_id": "carol"})

	// Members, with filters.
	all := n.ok("GET", v3+"/rooms/"+r+"/members", alice.token, nil).body["chunk"].([]any)
	joined := n.ok("GET", v3+"/rooms/"+r+"/members?membership=join", alice.token, nil).body["chunk"].([]any)
	notJoined := n.ok("GET", v3+"/rooms/"+r+"/members?not_membership=join", alice.token, nil).body["chunk"].([]any)
	if len(all) != 3 || len(joined) != 3 || len(notJoined) != 0 {
		t.Fatalf("members: all %d joined %d not joined %d", len(all), len(joined), len(notJoined))
	}

	// Leave, then reading the room shows it as it was when bob left.
	n.ok("POST", v3+"/rooms/"+r+"/leave", bob.token, nil)
	n.ok("PUT", v3+"/rooms/"+r+"/state/m.room.topic", alice.token, map[string]string{"topic": "after bob"})
	st := n.ok("GET", v3+"/rooms/"+r+"/state/m.room.member/"+esc(bob.id), bob.token, nil)
	if st.str("membership") != "leave" {
		t.Fatalf("left member reading own membership: %s", st.raw)
	}
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/rooms/"+r+"/state/m.room.topic", bob.token, nil)
	n.expect(403, "M_FORBIDDEN", "GET", v3+"/rooms/"+r+"/members", n.register("dave").token, nil)

	// Forget: only once out of the room.
	n.expect(400, "M_UNKNOWN", "POST", v3+"/rooms/"+r+"/forget", alice.token, nil)
	n.ok("POST", v3+"/rooms/"+r+"/forget", bob.token, nil)

	// Invites.
	eve := n.register("eve")
	priv := n.createRoom(alice, nil)
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/rooms/"+esc(priv)+"/join", eve.token, nil)
	n.ok("POST", v3+"/rooms/"+esc(priv)+"/invite", alice.token, map[string]string{"user_id": eve.id})
	n.ok("POST", v3+"/rooms/"+esc(priv)+"/join", eve.token, nil)
	// Someone already joined cannot be invited.
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/rooms/"+esc(priv)+"/invite", alice.token, map[string]string{"user_id": eve.id})
}

func TestSendStateRedact(t *testing.T) {
	n := newNode(t)
	alice, bob := n.register("alice"), n.register("bob")
	room := n.createRoom(alice, nil)
	r := esc(room)

	// Sends are idempotent per device and transaction ID.
	e1 := n.send(alice, room, "txn1", map[string]any{"msgtype": "m.text", "body": "one"})
	e1again := n.send(alice, room, "txn1", map[string]any{"msgtype": "m.text", "body": "one"})
	if e1 == "" || e1 != e1again {
		t.Fatalf("txn not idempotent: %s vs %s", e1, e1again)
	}
	other := n.ok("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "secret-alice"})
	alice2 := user{id: alice.id, token: other.str("access_token"), device: other.str("device_id")}
	if e := n.send(alice2, room, "txn1", map[string]any{"msgtype": "m.text", "body": "one"}); e == e1 {
		t.Fatal("another device's transaction reused the first device's event")
	}

	ev := n.ok("GET", v3+"/rooms/"+r+"/event/"+esc(e1), alice.token, nil)
	if ev.str("event_id") != e1 || ev.str("room_id") != room || ev.str("sender") != alice.id || ev.str("type") != "m.room.message" {
		t.Fatalf("event: %s", ev.raw)
	}
	if ev.body["content"].(map[string]any)["body"] != "one" || ev.body["origin_server_ts"] == nil {
		t.Fatalf("event content: %s", ev.raw)
	}
	// Non-members learn nothing about the room's events.
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/rooms/"+r+"/event/"+esc(e1), bob.token, nil)
	n.expect(403, "M_FORBIDDEN", "PUT", v3+"/rooms/"+r+"/send/m.room.message/b1", bob.token, map[string]string{"body": "x"})
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/rooms/"+r+"/event/"+esc("$nope"), alice.token, nil)

	// State: set, read, read back as an event, refused for non-members.
	put := n.ok("PUT", v3+"/rooms/"+r+"/state/m.room.name", alice.token, map[string]string{"name": "Lounge"})
	again := n.ok("PUT", v3+"/rooms/"+r+"/state/m.room.name/", alice.token, map[string]string{"name": "Lounge"})
	if put.str("event_id") == "" || put.str("event_id") != again.str("event_id") {
		t.Fatalf("same state twice should be one event: %s %s", put.raw, again.raw)
	}
	if n.state(alice, room, "m.room.name", "")["name"] != "Lounge" {
		t.Fatal("name not set")
	}
	asEvent := n.ok("GET", v3+"/rooms/"+r+"/state/m.room.name/?format=event", alice.token, nil)
	if asEvent.str("event_id") != put.str("event_id") {
		t.Fatalf("format=event: %s", asEvent.raw)
	}
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/rooms/"+r+"/state/m.room.avatar", alice.token, nil)
	n.expect(403, "M_FORBIDDEN", "GET", v3+"/rooms/"+r+"/state/m.room.name", bob.token, nil)
	n.expect(403, "M_FORBIDDEN", "GET", v3+"/rooms/"+r+"/state", bob.token, nil)
	all := n.ok("GET", v3+"/rooms/"+r+"/state", alice.token, nil)
	var evs []map[string]any
	if err := json.Unmarshal(all.raw, &evs); err != nil || len(evs) < 6 {
		t.Fatalf("all state: %s", all.raw)
	}
	n.expect(400, "M_BAD_ALIAS", "PUT", v3+"/rooms/"+r+"/state/m.room.canonical_alias", alice.token,
		map[string]string{"alias": "#nothere:" + server})

	// Redaction.
	red := n.ok("PUT", v3+"/rooms/"+r+"/redact/"+esc(e1)+"/red1", alice.token, map[string]string{"reason": "oops"})
	redID := red.str("event_id")
	redEv := n.ok("GET", v3+"/rooms/"+r+"/event/"+esc(redID), alice.token, nil)
	if redEv.str("redacts") != e1 || redEv.str("type") != "m.room.redaction" {
		t.Fatalf("redaction event: %s", redEv.raw)
	}
	gone := n.ok("GET", v3+"/rooms/"+r+"/event/"+esc(e1), alice.token, nil)
	if c := gone.body["content"].(map[string]any); len(c) != 0 {
		t.Fatalf("redacted event still has content: %s", gone.raw)
	}
	if again := n.ok("PUT", v3+"/rooms/"+r+"/redact/"+esc(e1)+"/red1", alice.token, map[string]string{"reason": "oops"}); again.str("event_id") != redID {
		t.Fatalf("redaction not idempotent: %s", again.raw)
	}
}

func TestDirectory(t *testing.T) {
	n := newNode(t)
	alice, bob := n.register("alice"), n.register("bob")
	room := n.createRoom(alice, map[string]any{"visibility": "public", "name": "Garden", "topic": "plants", "room_alias_name": "garden"})
	small := n.createRoom(alice, map[string]any{"name": "Shed"})

	got := n.ok("GET", v3+"/directory/room/"+esc("#garden:"+server), "", nil)
	if got.str("room_id") != room {
		t.Fatalf("alias lookup: %s", got.raw)
	}
	if n.state(alice, room, "m.room.canonical_alias", "")["alias"] != "#garden:"+server {
		t.Fatal("canonical alias not set")
	}
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/directory/room/"+esc("#nope:"+server), "", nil)
	n.expect(400, "M_INVALID_PARAM", "GET", v3+"/directory/room/nope", "", nil)

	al := esc("#shed:" + server)
	n.expect(403, "M_FORBIDDEN", "PUT", v3+"/directory/room/"+al, bob.token, map[string]string{"room_id": small})
	n.ok("PUT", v3+"/directory/room/"+al, alice.token, map[string]string{"room_id": small})
	n.expect(409, "M_UNKNOWN", "PUT", v3+"/directory/room/"+al, alice.token, map[string]string{"room_id": small})
	n.expect(400, "M_INVALID_PARAM", "PUT", v3+"/directory/room/"+esc("#x:elsewhere"), alice.token, map[string]string{"room_id": small})
	aliases := n.ok("GET", v3+"/rooms/"+esc(small)+"/aliases", alice.token, nil).body["aliases"].([]any)
	if len(aliases) != 1 || aliases[0] != "#shed:"+server {
		t.Fatalf("room aliases: %v", aliases)
	}
	n.expect(403, "M_FORBIDDEN", "DELETE", v3+"/directory/room/"+al, bob.token, nil)
	n.ok("DELETE", v3+"/directory/room/"+al, alice.token, nil)
	n.expect(404, "M_NOT_FOUND", "DELETE", v3+"/directory/room/"+al, alice.token, nil)

	// Visibility and the public room list.
	if v := n.ok("GET", v3+"/directory/list/room/"+esc(room), "", nil).str("visibility"); v != "public" {
		t.Fatalf("visibility %q", v)
	}
	if v := n.ok("GET", v3+"/directory/list/room/"+esc(small), "", nil).str("visibility"); v != "private" {
		t.Fatalf("visibility %q", v)
	}
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/directory/list/room/"+esc("!nope:x"), "", nil)
	n.expect(403, "M_FORBIDDEN", "PUT", v3+"/directory/list/room/"+esc(small), bob.token, map[string]string{"visibility": "public"})
	n.expect(400, "M_INVALID_PARAM", "PUT", v3+"/directory/list/room/"+esc(small), alice.token, map[string]string{"visibility": "loud"})
	n.ok("PUT", v3+"/directory/list/room/"+esc(small), alice.token, map[string]string{"visibility": "public"})
	n.ok("POST", v3+"/join/"+esc(room), bob.token, nil)

	pub := n.ok("GET", v3+"/publicRooms", "", nil)
	chunk := pub.body["chunk"].([]any)
	if len(chunk) != 2 {
		t.Fatalf("public rooms: %s", pub.raw)
	}
	first := chunk[0].(map[string]any)
	if first["room_id"] != room || first["num_joined_members"] != 2.0 || first["name"] != "Garden" ||
		first["topic"] != "plants" || first["canonical_alias"] != "#garden:"+server || first["join_rule"] != "public" {
		t.Fatalf("public room entry: %v", first)
	}
	page := n.ok("GET", v3+"/publicRooms?limit=1", "", nil)
	if len(page.body["chunk"].([]any)) != 1 || page.str("next_batch") == "" {
		t.Fatalf("paging: %s", page.raw)
	}
	page2 := n.ok("GET", v3+"/publicRooms?limit=1&since="+page.str("next_batch"), "", nil)
	if page2.body["chunk"].([]any)[0].(map[string]any)["room_id"] != small {
		t.Fatalf("second page: %s", page2.raw)
	}
	search := n.ok("POST", v3+"/publicRooms", bob.token, map[string]any{"filter": map[string]string{"generic_search_term": "SHED"}})
	if c := search.body["chunk"].([]any); len(c) != 1 || c[0].(map[string]any)["room_id"] != small {
		t.Fatalf("search: %s", search.raw)
	}
	n.expect(400, "M_INVALID_PARAM", "GET", v3+"/publicRooms?since=x", "", nil)
}

func TestTypingReceiptsPresence(t *testing.T) {
	n := newNode(t)
	alice, bob := n.register("alice"), n.register("bob")
	room := n.createRoom(alice, nil)
	r := esc(room)
	ev := n.send(alice, room, "t", map[string]any{"msgtype": "m.text", "body": "x"})

	n.ok("PUT", v3+"/rooms/"+r+"/typing/"+esc(alice.id), alice.token, map[string]any{"typing": true, "timeout": 3000})
	n.expect(400, "M_MISSING_PARAM", "PUT", v3+"/rooms/"+r+"/typing/"+esc(alice.id), alice.token, map[string]any{})
	n.expect(403, "M_FORBIDDEN", "PUT", v3+"/rooms/"+r+"/typing/"+esc(alice.id), bob.token, map[string]any{"typing": true})
	n.expect(403, "M_FORBIDDEN", "PUT", v3+"/rooms/"+r+"/typing/"+esc(bob.id), bob.token, map[string]any{"typing": true})

	n.ok("POST", v3+"/rooms/"+r+"/receipt/m.read/"+esc(ev), alice.token, map[string]any{})
	n.expect(400, "M_INVALID_PARAM", "POST", v3+"/rooms/"+r+"/receipt/m.bogus/"+esc(ev), alice.token, map[string]any{})
	n.expect(403, "M_FORBIDDEN", "POST", v3+"/rooms/"+r+"/receipt/m.read/"+esc(ev), bob.token, map[string]any{})
	n.ok("POST", v3+"/rooms/"+r+"/read_markers", alice.token, map[string]any{"m.fully_read": ev, "m.read": ev})
	fr := n.ok("GET", v3+"/user/"+esc(alice.id)+"/rooms/"+r+"/account_data/m.fully_read", alice.token, nil)
	if fr.str("event_id") != ev {
		t.Fatalf("fully read marker: %s", fr.raw)
	}
	n.mu.Lock()
	typing, receipts := strings.Join(n.typing, "\n"), strings.Join(n.receipts, "\n")
	n.mu.Unlock()
	if !strings.Contains(typing, room+" "+alice.id+" true") || strings.Count(receipts, "m.read "+ev) != 2 {
		t.Fatalf("hooks: typing %q receipts %q", typing, receipts)
	}

	n.ok("PUT", v3+"/presence/"+esc(alice.id)+"/status", alice.token, map[string]string{"presence": "online", "status_msg": "here"})
	if p := n.ok("GET", v3+"/presence/"+esc(alice.id)+"/status", bob.token, nil); p.str("presence") != "online" || p.str("status_msg") != "here" {
		t.Fatalf("presence: %s", p.raw)
	}
	n.expect(400, "M_INVALID_PARAM", "PUT", v3+"/presence/"+esc(alice.id)+"/status", alice.token, map[string]string{"presence": "asleep"})
	n.expect(403, "M_FORBIDDEN", "PUT", v3+"/presence/"+esc(alice.id)+"/status", bob.token, map[string]string{"presence": "online"})
}

func TestKeys(t *testing.T) {
	n := newNode(t)
	alice, bob := n.register("alice"), n.register("bob")
	dk := map[string]any{"user_id": alice.id, "device_id": alice.device, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys": map[string]string{"curve25519:" + alice.device: "abc", "ed25519:" + alice.device: "def"}}
	up := n.ok("POST", v3+"/keys/upload", alice.token, map[string]any{
		"device_keys":   dk,
		"one_time_keys": map[string]any{"signed_curve25519:AAAA": map[string]string{"key": "k1"}, "signed_curve25519:AAAB": map[string]string{"key": "k2"}},
		"fallback_keys": map[string]any{"signed_curve25519:FB": map[string]any{"key": "fb", "fallback": true}},
	})
	if c := up.body["one_time_key_counts"].(map[string]any)["signed_curve25519"]; c != 2.0 {
		t.Fatalf("counts: %s", up.raw)
	}
	n.expect(400, "M_INVALID_PARAM", "POST", v3+"/keys/upload", bob.token, map[string]any{"device_keys": dk})

	q := n.ok("POST", v3+"/keys/query", bob.token, map[string]any{"device_keys": map[string][]string{alice.id: {}}})
	if _, ok := q.body["device_keys"].(map[string]any)[alice.id].(map[string]any)[alice.device]; !ok {
		t.Fatalf("query: %s", q.raw)
	}
	claim := func() string {
		c := n.ok("POST", v3+"/keys/claim", bob.token, map[string]any{"one_time_keys": map[string]any{alice.id: map[string]string{alice.device: "signed_curve25519"}}})
		for id := range c.body["one_time_keys"].(map[string]any)[alice.id].(map[string]any)[alice.device].(map[string]any) {
			return id
		}
		return ""
	}
	got := []string{claim(), claim(), claim(), claim()}
	if got[0] == got[1] || got[2] != "signed_curve25519:FB" || got[3] != "signed_curve25519:FB" {
		t.Fatalf("claims: %v", got)
	}
	n.ok("GET", v3+"/keys/changes?from=0&to=1", alice.token, nil)
	n.ok("PUT", v3+"/sendToDevice/m.room_key_request/t1", alice.token, map[string]any{"messages": map[string]any{}})
	n.expect(404, "M_NOT_FOUND", "GET", v3+"/room_keys/version", alice.token, nil)
}
