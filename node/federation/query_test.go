package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/storage"
)

func TestQueriesAndKeys(t *testing.T) {
	ctx := context.Background()
	n := newNet()
	a, b := newNode(t, n, "a.test"), newNode(t, n, "b.test")
	alice := a.user("alice")
	if err := a.db.SetAvatarURL(ctx, alice, "mxc://a.test/face"); err != nil {
		t.Fatal(err)
	}
	dev := "DEVICE1"
	if _, err := a.db.CreateDevice(ctx, alice, storage.NewDevice{DeviceID: dev, TokenHash: "h"}); err != nil {
		t.Fatal(err)
	}
	keys := js(map[string]any{"user_id": alice, "device_id": dev, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys": map[string]string{"curve25519:" + dev: "AAAA"}})
	if _, err := a.db.PutDeviceKeys(ctx, alice, dev, keys, []storage.OneTimeKey{
		{KeyID: "signed_curve25519:k1", Algorithm: "signed_curve25519", Key: js(map[string]string{"key": "BBBB"})},
	}, nil); err != nil {
		t.Fatal(err)
	}
	c := b.fed.Client()

	p, err := c.LookupProfile(ctx, "b.test", "a.test", alice, "")
	if err != nil || p.DisplayName != "alice" || p.AvatarURL != "mxc://a.test/face" {
		t.Fatalf("profile: %+v, %v", p, err)
	}
	if _, err := c.LookupProfile(ctx, "b.test", "a.test", "@nobody:a.test", ""); err == nil {
		t.Fatal("profile of an unknown user")
	}
	devs, err := c.GetUserDevices(ctx, "b.test", "a.test", alice)
	if err != nil || len(devs.Devices) != 1 || devs.Devices[0].DeviceID != dev || devs.Devices[0].Keys.DeviceID != dev {
		t.Fatalf("devices: %+v, %v", devs, err)
	}
	q, err := c.QueryKeys(ctx, "b.test", "a.test", map[string][]string{alice: nil})
	if err != nil || q.DeviceKeys[alice][dev].DeviceID != dev {
		t.Fatalf("keys/query: %+v, %v", q, err)
	}
	cl, err := c.ClaimKeys(ctx, "b.test", "a.test", map[string]map[string]string{alice: {dev: "signed_curve25519"}})
	if err != nil || cl.OneTimeKeys[alice][dev]["signed_curve25519:k1"] == nil {
		t.Fatalf("keys/claim: %+v, %v", cl, err)
	}
	cl, _ = c.ClaimKeys(ctx, "b.test", "a.test", map[string]map[string]string{alice: {dev: "signed_curve25519"}})
	if len(cl.OneTimeKeys[alice]) != 0 {
		t.Fatal("a one-time key was claimed twice")
	}
	if _, err := c.LookupRoomAlias(ctx, "b.test", "a.test", "#nowhere:a.test"); err == nil {
		t.Fatal("unknown alias resolved")
	}

	// The key server: self-signed, the key the name stands for.
	resp, err := http.Get(a.srv.URL + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var sk struct {
		ServerName string `json:"server_name"`
		ValidUntil int64  `json:"valid_until_ts"`
		VerifyKeys map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
	}
	if err := json.Unmarshal(body, &sk); err != nil {
		t.Fatal(err)
	}
	pub, _ := base64.RawStdEncoding.DecodeString(sk.VerifyKeys["ed25519:p2p"].Key)
	if sk.ServerName != "a.test" || !ed25519.PublicKey(pub).Equal(a.key.Public()) ||
		sk.ValidUntil < time.Now().Add(365*24*time.Hour).UnixMilli() {
		t.Fatalf("server keys: %s", body)
	}
	if err := gomatrixserverlib.VerifyJSON("a.test", "ed25519:p2p", pub, body); err != nil {
		t.Fatalf("server keys not self-signed: %v", err)
	}

	// Unknown endpoints and unsigned requests get Matrix errors.
	for path, want := range map[string]int{
		"/_matrix/federation/v1/nothing":         404,
		"/_matrix/federation/v1/query/profile":   401,
		"/_matrix/federation/v1/version":         200,
		"/_matrix/federation/v1/event/$x:a.test": 401,
	} {
		resp, err := http.Get(a.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Code string `json:"errcode"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != want || (want != 200 && e.Code == "") {
			t.Errorf("%s: %d %q, want %d", path, resp.StatusCode, e.Code, want)
		}
	}
}

func TestEDUsReachTheOtherServer(t *testing.T) {
	_, a, b, alice, _, room := sharedRoom(t)
	servers, err := a.fed.RoomServers(context.Background(), room)
	if err != nil || len(servers) != 1 || servers[0] != "b.test" {
		t.Fatalf("room servers: %v, %v", servers, err)
	}
	typing := gomatrixserverlib.EDU{Type: "m.typing", Content: spec.RawJSON(js(map[string]any{"room_id": room, "user_id": alice, "typing": true}))}
	if err := a.fed.SendEDU(context.Background(), typing, servers...); err != nil {
		t.Fatal(err)
	}
	junk := gomatrixserverlib.EDU{Type: "org.example.junk", Content: spec.RawJSON(`{}`)}
	if err := a.fed.SendEDU(context.Background(), junk, servers...); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		b.mu.Lock()
		got := append([]gomatrixserverlib.EDU{}, b.edus...)
		b.mu.Unlock()
		if len(got) > 0 {
			if len(got) != 1 || got[0].Type != "m.typing" || got[0].Origin != "a.test" {
				t.Fatalf("B got %+v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the typing EDU never arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
