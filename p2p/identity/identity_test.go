package identity

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestLoadOrCreateIsStable(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.ServerName != b.ServerName || !bytes.Equal(a.Private, b.Private) {
		t.Fatalf("second start changed identity: %s → %s", a.ServerName, b.ServerName)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "node.key")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if !strings.HasPrefix(a.ServerName, "k51") || strings.ToLower(a.ServerName) != a.ServerName {
		t.Fatalf("server name %q is not a lowercase base36 CIDv1", a.ServerName)
	}
}

func TestCorruptKeyFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "node.key"), []byte("short"), 0o600)
	if _, err := LoadOrCreate(dir); err == nil {
		t.Fatal("a 5-byte key file was accepted")
	}
}

func TestNameRoundTripsToKey(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	id, err := New(priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := PublicKeyOf(id.ServerName)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(pub) {
		t.Fatal("decoded key differs from the signing key")
	}
	msg := []byte("hello")
	if !ed25519.Verify(got, msg, ed25519.Sign(priv, msg)) {
		t.Fatal("signature does not verify with the key from the name")
	}
	// Asked again (now from the cache of decoded names), the same key.
	if again, err := PublicKeyOf(id.ServerName); err != nil || !again.Equal(pub) {
		t.Fatalf("second lookup: %v", err)
	}
}

func TestOnlyCanonicalNamesAccepted(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	id, _ := New(priv)
	for name, bad := range map[string]string{
		"upper case":  strings.ToUpper(id.ServerName),
		"base58 form": id.PeerID.String(), // 12D3KooW…
		"base32 CID":  peer.ToCid(id.PeerID).String(),
		"garbage":     "example.org",
		"empty":       "",
	} {
		if _, err := PublicKeyOf(bad); err == nil {
			t.Errorf("%s %q accepted as a server name", name, bad)
		}
	}
}
