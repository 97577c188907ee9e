package fedhttp

import (
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"testing"

	ic "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"hearth/p2p/identity"
)

func peerOf(t *testing.T, typ int) peer.ID {
	t.Helper()
	priv, _, err := ic.GenerateKeyPairWithReader(typ, 256, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestServerNameOfOnlyForEd25519(t *testing.T) {
	ed := peerOf(t, ic.Ed25519)
	name := ServerNameOf(ed)
	if back, err := identity.PeerIDOf(name); err != nil || back != ed {
		t.Fatalf("name %q of an ed25519 peer does not decode back (%v)", name, err)
	}
	// A secp256k1 peer is a libp2p peer but cannot be a Hearth server: its
	// key is not an ed25519 signing key.
	if got := ServerNameOf(peerOf(t, ic.Secp256k1)); got != "" {
		t.Fatalf("secp256k1 peer got server name %q", got)
	}
	if got := ServerNameOf(""); got != "" {
		t.Fatalf("empty peer got server name %q", got)
	}
}

func TestTransportRefusesBadURLsBeforeDialling(t *testing.T) {
	// No host: anything that got as far as dialling would panic.
	tr := NewTransport(nil, nil)
	name := ServerNameOf(peerOf(t, ic.Ed25519))
	for _, url := range []string{
		"https://" + name + "/x",                   // not our schemes
		"matrix://" + strings.ToUpper(name) + "/x", // other spelling of the key
		"matrix://example.org/x",                   // DNS names mean nothing here
	} {
		req, _ := http.NewRequest("GET", url, nil)
		if _, err := tr.RoundTrip(req); err == nil {
			t.Fatalf("%s: accepted", url)
		}
	}
	req, _ := http.NewRequest("GET", "matrix://"+strings.ToUpper(name)+"/x", nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, identity.ErrNotCanonical) {
		t.Fatalf("upper-case name: %v, want ErrNotCanonical", err)
	}
}
