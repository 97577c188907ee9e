// Package testnet is an in-process federation network for tests only: it
// must not be imported by production code (and, since it imports
// node/roomserver, not by package-internal tests of roomserver or the
// packages roomserver imports).
//
// Each server's federation handler is served by httptest on 127.0.0.1
// and registered under its server name; a RoundTripper maps
// matrix://<name>/... to it. The connection is "authenticated" as the
// sender's name with a header that RemotePeer reads on the receiving
// side, as libp2p would give it. Servers can be switched off and on to
// make them unreachable, and a NameVerifier checks signatures against
// the keys registered on the network.
package testnet

import (
	"crypto/ed25519"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/roomserver"
)

// PeerHeader carries the authenticated sender's server name.
const PeerHeader = "X-Test-Peer"

// KeyID is the key ID the network's servers sign with (that of p2p/identity).
const KeyID = "ed25519:p2p"

// Net is the name → server registry. The zero value is not usable; use New.
type Net struct {
	mu   sync.Mutex
	urls map[string]*url.URL
	down map[string]bool
	keys map[string]ed25519.PublicKey
}

// New returns an empty network.
func New() *Net {
	return &Net{urls: map[string]*url.URL{}, down: map[string]bool{}, keys: map[string]ed25519.PublicKey{}}
}

// Server is one server's federation API on the network.
type Server struct {
	*httptest.Server
	net  *Net
	name string
	u    *url.URL
	once sync.Once
}

// Serve serves h as name's federation API on 127.0.0.1 and puts it on the
// network under name.
func (n *Net) Serve(name string, h http.Handler) *Server {
	s := &Server{Server: httptest.NewServer(h), net: n, name: name}
	u, err := url.Parse(s.URL)
	if err != nil {
		s.Server.Close()
		panic(fmt.Sprintf("testnet: httptest URL %q: %v", s.URL, err))
	}
	s.u = u
	n.mu.Lock()
	n.urls[name] = u
	n.mu.Unlock()
	return s
}

// Close takes the server off the network, then closes it. It may be
// called more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		s.net.mu.Lock()
		// A restart may have registered a newer server under the name.
		if s.net.urls[s.name] == s.u {
			delete(s.net.urls, s.name)
		}
		s.net.mu.Unlock()
		s.Server.Close()
	})
}

// SetDown makes a server unreachable (or reachable again) without
// stopping it.
func (n *Net) SetDown(name string, down bool) {
	n.mu.Lock()
	n.down[name] = down
	n.mu.Unlock()
}

// AddKey registers name's public key for Verifier.
func (n *Net) AddKey(name string, pub ed25519.PublicKey) {
	n.mu.Lock()
	n.keys[name] = pub
	n.mu.Unlock()
}

// KeyOf is the key registered for name.
func (n *Net) KeyOf(name string) (ed25519.PublicKey, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if k, ok := n.keys[name]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("unknown server %s", name)
}

// Verifier checks signatures by KeyID against the registered keys.
func (n *Net) Verifier() gomatrixserverlib.JSONVerifier {
	return roomserver.NameVerifier{KeyID: KeyID, KeyOf: n.KeyOf}
}

// Transport is how owner reaches the others: requests to matrix://<name>/
// go to name's server, marked as coming from owner.
func (n *Net) Transport(owner string) http.RoundTripper {
	return &transport{net: n, owner: owner, inner: &http.Transport{MaxIdleConnsPerHost: 16}}
}

type transport struct {
	net   *Net
	owner string
	inner *http.Transport
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.net.mu.Lock()
	u, ok := t.net.urls[req.URL.Host]
	down := t.net.down[req.URL.Host]
	t.net.mu.Unlock()
	if !ok || down || req.URL.Scheme != "matrix" {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("test network: %s is unreachable", req.URL.Host)
	}
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, u.Host
	r.Header.Set(PeerHeader, t.owner)
	return t.inner.RoundTrip(r)
}

// RemotePeer is the receiving side's view of who sent a request: the
// name the sender's Transport put in PeerHeader.
func RemotePeer(r *http.Request) (string, bool) {
	p := r.Header.Get(PeerHeader)
	return p, p != ""
}
