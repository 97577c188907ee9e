// Package node assembles a Hearth homeserver from its parts: storage, the
// roomserver, sync and the client API. It has no build tags and no
// platform code: the caller supplies the key, the database options (and so
// the VFS) and, later, the federation transport.
package node

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
	"hearth/node/storage"
)

// Config is everything a node needs from the platform it runs on.
type Config struct {
	ServerName string
	KeyID      string
	PrivateKey ed25519.PrivateKey
	DB         storage.Options
	// OpenRegistration allows m.login.dummy registration.
	OpenRegistration bool
	Logger           *slog.Logger
}

// Node is a running homeserver.
type Node struct {
	cfg  Config
	DB   *storage.DB
	Room *roomserver.Roomserver
	mux  *http.ServeMux
}

// New opens storage and starts the node's components.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	db, err := storage.Open(cfg.DB)
	if err != nil {
		return nil, err
	}
	if err := db.MigrateUserData(); err != nil {
		db.Close()
		return nil, err
	}
	rs, err := roomserver.New(db, roomserver.Config{
		ServerName:         spec.ServerName(cfg.ServerName),
		KeyID:              gomatrixserverlib.KeyID(cfg.KeyID),
		PrivateKey:         cfg.PrivateKey,
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	n := &Node{cfg: cfg, DB: db, Room: rs, mux: http.NewServeMux()}
	return n, nil
}

// Handler serves the Client-Server API (/_matrix/client/...).
func (n *Node) Handler() http.Handler { return n.mux }

// ServerName is the node's Matrix server name.
func (n *Node) ServerName() string { return n.cfg.ServerName }

// Close stops the node and closes its database.
func (n *Node) Close() error {
	n.Room.Close()
	return n.DB.Close()
}
