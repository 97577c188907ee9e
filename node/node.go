// Package node assembles a Hearth homeserver from its parts: storage, the
// roomserver, sync and the client API. It has no build tags and no
// platform code: the caller supplies the key, the database options (and so
// the VFS) and the federation transport.
package node

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/backfill"
	"hearth/node/clientapi"
	"hearth/node/edu"
	"hearth/node/federation"
	"hearth/node/roomserver"
	"hearth/node/storage"
	"hearth/node/syncapi"
)

// Config is everything a node needs from the platform it runs on.
type Config struct {
	ServerName string
	KeyID      string
	PrivateKey ed25519.PrivateKey
	// KeyOf returns the signing key of another server from its name
	// (Hearth's names are their keys; see p2p/identity).
	KeyOf func(serverName string) (ed25519.PublicKey, error)
	// Verifier, when set, checks other servers' signatures instead of the
	// roomserver.NameVerifier built from KeyOf: the browser supplies one
	// backed by WebCrypto, which is several times faster than Go in wasm.
	Verifier gomatrixserverlib.JSONVerifier
	// VerifyWidth is how many received events are verified at once
	// (roomserver.Config.VerifyWidth); 0: one per core. A Verifier that
	// waits on another thread wants more than cores.
	VerifyWidth int
	// Checker checks large batches of received events on other threads
	// (roomserver.Config.Checker): the browser's check workers.
	Checker roomserver.Checker
	DB      storage.Options
	// OpenRegistration allows m.login.dummy registration;
	// RegistrationFrom, when set, only for the requests it accepts.
	OpenRegistration bool
	RegistrationFrom func(*http.Request) bool
	// Transport carries federation requests (matrix://<server name>/...)
	// to other servers; nil: this node does not federate.
	Transport http.RoundTripper
	// RemotePeer names the server an inbound federation request's
	// connection is authenticated as (libp2p knows; nil: nobody does).
	// Federation takes that server's X-Matrix signature as read.
	RemotePeer func(*http.Request) (serverName string, ok bool)
	Logger     *slog.Logger
}

// Node is a running homeserver.
type Node struct {
	cfg  Config
	DB   *storage.DB
	Room *roomserver.Roomserver
	Sync *syncapi.Syncer
	Fed  *federation.Federation
	EDU  *edu.Relay // typing, receipts, presence, to-device and device lists between servers
	API  *clientapi.API
	bf   *backfill.Backfiller
	mux  *http.ServeMux
}

// New opens storage and starts the node's components.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DB.Compact == "" {
		cfg.DB.Compact = cfg.ServerName
	}
	db, err := storage.Open(cfg.DB)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, DB: db, mux: http.NewServeMux()}
	if err := n.start(); err != nil {
		n.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	return n, nil
}

func (n *Node) start() error {
	cfg := n.cfg
	for _, migrate := range []func() error{n.DB.MigrateUserData, n.DB.MigrateAccounts} {
		if err := migrate(); err != nil {
			return err
		}
	}
	var err error
	if n.Sync, err = syncapi.New(n.DB, syncapi.Config{Logger: cfg.Logger, Backfill: n.backfill, ServerName: cfg.ServerName}); err != nil {
		return err
	}
	verifier := cfg.Verifier
	if verifier == nil && cfg.KeyOf != nil {
		verifier = roomserver.NameVerifier{KeyID: gomatrixserverlib.KeyID(cfg.KeyID), KeyOf: cfg.KeyOf}
	}
	n.Room, err = roomserver.New(n.DB, roomserver.Config{
		ServerName:  spec.ServerName(cfg.ServerName),
		KeyID:       gomatrixserverlib.KeyID(cfg.KeyID),
		PrivateKey:  cfg.PrivateKey,
		Verifier:    verifier,
		VerifyWidth: cfg.VerifyWidth,
		Checker:     cfg.Checker,
		OnOutput:    n.onOutput,
	})
	if err != nil {
		return err
	}
	apiCfg := clientapi.Config{
		ServerName:         cfg.ServerName,
		OpenRegistration:   cfg.OpenRegistration,
		RegistrationFrom:   cfg.RegistrationFrom,
		DefaultRoomVersion: string(roomserver.StableVersions[0]),
		OnAccountData:      n.Sync.OnAccountData,
		OnTyping:           n.Sync.OnTyping,
		OnReceipt:          n.Sync.OnReceipt,
		OnPresence:         n.Sync.OnPresence,
	}
	if cfg.Transport != nil {
		n.EDU = edu.New(edu.Config{ServerName: cfg.ServerName, Sync: n.Sync, Logger: cfg.Logger})
		n.Fed, err = federation.New(federation.Config{
			ServerName: spec.ServerName(cfg.ServerName),
			KeyID:      gomatrixserverlib.KeyID(cfg.KeyID),
			PrivateKey: cfg.PrivateKey,
			Transport:  cfg.Transport,
			Verifier:   verifier,
			RemotePeer: cfg.RemotePeer,
			OnEDU:      n.EDU.OnEDU,
			// A one-time key claimed by another server changes the
			// count the device's next sync reports.
			OnKeysClaimed: n.Sync.OneTimeKeysChanged,
			Logger:        cfg.Logger,
		}, n.DB, n.Room)
		if err != nil {
			return err
		}
		n.EDU.Attach(n.Fed)
		apiCfg.Federation = n.Fed
		n.bf = backfill.New(n.Room, n.Fed.Client(), spec.ServerName(cfg.ServerName), cfg.Logger)
	}
	n.API = clientapi.New(apiCfg, n.DB, n.Room, n.Sync)
	n.API.Register(n.mux)
	if err := n.Room.Recover(context.Background()); err != nil {
		return err
	}
	if n.Fed != nil {
		return n.Fed.Start()
	}
	return nil
}

// onOutput fans the roomserver's committed events out to its consumers.
func (n *Node) onOutput(outs []roomserver.Output) {
	evs := make([]syncapi.RoomEvent, len(outs))
	for i, o := range outs {
		evs[i] = syncapi.NewRoomEvent(o.Pos, o.RoomID, o.Event)
	}
	// Federation first. In the browser goroutines share one thread, and
	// Go's scheduler runs the goroutine woken last first and queues the
	// others in the order they were woken. When the room's worker commits,
	// it wakes the requester after these, so the fan-out sends the event
	// on before this server's own clients' /sync answers are built. A
	// send committed on the request's own goroutine leaves the /sync
	// goroutines, woken last, to run first; the sender's own then yields
	// once (an echo, see syncapi's notifyFrom), letting the fan-out go.
	if n.Fed != nil {
		n.Fed.OnOutput(outs)
	}
	n.Sync.OnRoomEvents(evs)
}

// backfill fetches older history from other servers for /messages.
func (n *Node) backfill(ctx context.Context, roomID string, limit int) (bool, error) {
	if n.bf == nil {
		return false, nil
	}
	return n.bf.Backfill(ctx, roomID, limit)
}

// Handler serves the Client-Server API (/_matrix/client/...).
func (n *Node) Handler() http.Handler { return n.mux }

// FederationHandler serves the Server-Server API (/_matrix/federation/...,
// /_matrix/key/...), or nil when the node does not federate.
func (n *Node) FederationHandler() http.Handler {
	if n.Fed == nil {
		return nil
	}
	return n.Fed.Handler()
}

// PeerOnline tells the node a server just became reachable, so what waits
// for it goes now rather than at the next retry.
func (n *Node) PeerOnline(serverName string) {
	if n.Fed != nil {
		n.Fed.PeerOnline(serverName)
	}
}

// ServerName is the node's Matrix server name.
func (n *Node) ServerName() string { return n.cfg.ServerName }

// Close stops the node and closes its database.
func (n *Node) Close() error {
	if n.EDU != nil {
		n.EDU.Close()
	}
	if n.bf != nil {
		n.bf.Close() // its read-aheads use federation's client
	}
	if n.Fed != nil {
		n.Fed.Close()
	}
	if n.Room != nil {
		n.Room.Close()
	}
	if n.Sync != nil {
		n.Sync.Close()
	}
	return n.DB.Close()
}
