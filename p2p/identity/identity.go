// Package identity owns a node's one ed25519 key and the self-certifying
// server names derived from it.
//
// The key is at once the libp2p identity, the Matrix signing key (key ID
// "ed25519:p2p", never rotated) and, encoded as the lowercase base36 CIDv1
// "libp2p-key" form of its peer ID, the Matrix server name. Verifying a
// server's signature therefore needs no key server: decode the name, get the
// key. It imports libp2p's core types only; it must not import node/.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/ipfs/go-cid"
	ic "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multibase"
)

// KeyID is the one Matrix key ID every Hearth node signs with.
const KeyID = "ed25519:p2p"

// Identity is a node's key and the names derived from it.
type Identity struct {
	Private    ed25519.PrivateKey
	PeerID     peer.ID
	ServerName string
}

// New derives the identity of an ed25519 private key.
func New(priv ed25519.PrivateKey) (*Identity, error) {
	pub, ok := priv.Public().(ed25519.PublicKey)
	if !ok || len(priv) != ed25519.PrivateKeySize {
		return nil, errors.New("identity: not an ed25519 key")
	}
	id, err := PeerIDFromKey(pub)
	if err != nil {
		return nil, err
	}
	return &Identity{Private: priv, PeerID: id, ServerName: NameOf(id)}, nil
}

// LoadOrCreate reads the node key from dir/node.key, creating it on first
// start. The file holds the 32-byte ed25519 seed and is readable by the
// owner only.
func LoadOrCreate(dir string) (*Identity, error) {
	path := filepath.Join(dir, "node.key")
	seed, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		seed = make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
		// Write then rename so a crash never leaves half a key behind.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, seed, 0o600); err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity: %s holds %d bytes, want an ed25519 seed of %d", path, len(seed), ed25519.SeedSize)
	}
	return New(ed25519.NewKeyFromSeed(seed))
}

// LibP2PKey is the key in the form libp2p hosts take.
func (id *Identity) LibP2PKey() ic.PrivKey {
	k, err := ic.UnmarshalEd25519PrivateKey(id.Private)
	if err != nil {
		panic(err) // a valid ed25519 key always unmarshals
	}
	return k
}

// PeerIDFromKey is the libp2p peer ID of an ed25519 public key.
func PeerIDFromKey(pub ed25519.PublicKey) (peer.ID, error) {
	k, err := ic.UnmarshalEd25519PublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	return peer.IDFromPublicKey(k)
}

// NameOf is the server name of a peer: its ID as a base36 CIDv1, which is
// lowercase and DNS-safe.
func NameOf(id peer.ID) string {
	s, err := peer.ToCid(id).StringOfBase(multibase.Base36)
	if err != nil {
		panic(err) // base36 is a known encoding
	}
	return s
}

// ErrNotCanonical is returned for names that decode to a key but are not
// that key's one canonical spelling.
var ErrNotCanonical = errors.New("identity: server name is not in canonical form")

// PeerIDOf decodes a server name to its peer ID. Only the canonical form is
// accepted: peer.Decode also takes upper case and the 12D3KooW… form, and
// accepting those would make one key many servers.
func PeerIDOf(name string) (peer.ID, error) {
	c, err := cid.Decode(name)
	if err != nil {
		return "", fmt.Errorf("identity: server name %q: %w", name, err)
	}
	id, err := peer.FromCid(c)
	if err != nil {
		return "", fmt.Errorf("identity: server name %q: %w", name, err)
	}
	if NameOf(id) != name {
		return "", ErrNotCanonical
	}
	return id, nil
}

// PublicKeyOf returns the ed25519 signing key named by a server name.
func PublicKeyOf(name string) (ed25519.PublicKey, error) {
	keys.Lock()
	k, ok := keys.m[name]
	keys.Unlock()
	if ok {
		return k, nil
	}
	k, err := publicKeyOf(name)
	if err != nil {
		return nil, err
	}
	keys.Lock()
	if len(keys.m) >= maxKeys { // names come from peers: keep it bounded
		clear(keys.m)
	}
	keys.m[name] = k
	keys.Unlock()
	return k, nil
}

// keys remembers the keys of names decoded before: every signature check
// asks, and decoding a name (base36, CID, multihash, protobuf) costs as
// much as a few percent of checking a signature.
var keys = struct {
	sync.Mutex
	m map[string]ed25519.PublicKey
}{m: map[string]ed25519.PublicKey{}}

const maxKeys = 4096

func publicKeyOf(name string) (ed25519.PublicKey, error) {
	id, err := PeerIDOf(name)
	if err != nil {
		return nil, err
	}
	pk, err := id.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("identity: server name %q: %w", name, err)
	}
	if pk.Type() != ic.Ed25519 {
		return nil, fmt.Errorf("identity: server name %q is not an ed25519 key", name)
	}
	raw, err := pk.Raw()
	if err != nil {
		return nil, fmt.Errorf("identity: server name %q: %w", name, err)
	}
	return ed25519.PublicKey(raw), nil
}
