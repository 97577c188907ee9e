// Package testnode runs whole Hearth nodes on a testnet network, for
// tests only: it must not be imported by production code, nor by
// package-internal tests of anything node imports (it imports node).
//
// Each node has a fresh identity and database (see testdb), serves its
// client API with httptest on 127.0.0.1 and its federation API on the
// network, and reaches the others by server name as it would over libp2p.
package testnode

import (
	"net/http/httptest"
	"testing"

	"hearth/node"
	"hearth/node/internal/testdb"
	"hearth/node/internal/testnet"
	"hearth/p2p/identity"
)

// Network is a testnet network of whole nodes, stopped when t ends.
type Network struct {
	*testnet.Net
	t testing.TB
}

// Server is one running node.
type Server struct {
	Name      string // server name (the identity's)
	Node      *node.Node
	ClientAPI *httptest.Server // the client API
}

// New returns an empty network for t.
func New(t testing.TB) *Network { return &Network{Net: testnet.New(), t: t} }

// Add starts a node with open registration and puts it on the network.
func (n *Network) Add() *Server {
	t := n.t
	t.Helper()
	id, err := identity.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nd, err := node.New(node.Config{
		ServerName: id.ServerName, KeyID: identity.KeyID, PrivateKey: id.Private, KeyOf: identity.PublicKeyOf,
		DB:               testdb.Options(t),
		OpenRegistration: true,
		Transport:        n.Transport(id.ServerName),
		RemotePeer:       testnet.RemotePeer,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &Server{Name: id.ServerName, Node: nd, ClientAPI: httptest.NewServer(nd.Handler())}
	fed := n.Serve(h.Name, nd.FederationHandler())
	t.Cleanup(func() {
		h.ClientAPI.Close()
		fed.Close()
		nd.Close()
	})
	return h
}
