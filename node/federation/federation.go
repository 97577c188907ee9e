// Package federation owns the Matrix Server-Server API: the handlers other
// servers call (/_matrix/federation/... and /_matrix/key/v2/server), the
// outbound client, the persistent per-destination queues that push this
// server's events and EDUs to the others in a room, filling gaps in the
// event graph from peers (/get_missing_events, /state_ids), and the
// joins, invites and leaves that need another server (PerformJoin,
// PerformInvite, PerformLeave).
//
// It knows nothing of libp2p: the node hands it an http.RoundTripper that
// reaches matrix://<server name>/... and, for inbound requests, a function
// naming the authenticated remote peer. It imports roomserver, storage and
// httputil; it must not import clientapi, syncapi or p2p.
package federation

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/roomserver"
	"hearth/node/storage"
)

// Config is what federation needs from its node.
type Config struct {
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	// Transport carries matrix://<server name>/... requests to that server.
	Transport http.RoundTripper
	// Verifier checks other servers' signatures (events and X-Matrix).
	Verifier gomatrixserverlib.JSONVerifier
	// RemotePeer names the server an inbound request's connection is
	// authenticated as, and must come from that authentication alone:
	// that server's own X-Matrix signature is then not checked again
	// (see peerVouched). nil, or ok == false: the transport says
	// nothing, and the X-Matrix signature alone identifies the origin.
	RemotePeer func(*http.Request) (serverName string, ok bool)
	// OnEDU receives the EDUs other servers send (typing, receipts,
	// presence, to-device messages, device list updates). It must not
	// block for long. nil: EDUs are dropped.
	OnEDU func(origin string, edu gomatrixserverlib.EDU)
	// OnKeysClaimed is told that another server claimed one of a local
	// device's one-time keys (sync reports the device's key counts).
	// nil: nobody is told.
	OnKeysClaimed func(userID, deviceID string)
	Logger        *slog.Logger

	// Tuning; zero values take the defaults.

	// MinBackoff and MaxBackoff bound the wait before retrying a
	// destination that failed (default 1s and 5 min).
	MinBackoff, MaxBackoff time.Duration
	// MaxQueuedPDUs caps one destination's PDU queue (default 100,000).
	// Past it the oldest are dropped: a returning peer fills that gap
	// with /get_missing_events, /state_ids and backfill.
	MaxQueuedPDUs int
	// MaxQueuedEDUs caps one destination's EDU queue (default 1,000).
	MaxQueuedEDUs int
	// RequestTimeout bounds one outbound request (default 60s).
	RequestTimeout time.Duration
	// GapTimeout bounds filling one room's gap for a /send (default 10s).
	GapTimeout time.Duration
}

// Federation is the node's Server-Server API.
type Federation struct {
	cfg    Config
	db     *storage.DB
	rs     *roomserver.Roomserver
	client fclient.FederationClient
	log    *slog.Logger
	mux    *http.ServeMux
	vis    *visibility

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	fanWake chan struct{}
	destMu  sync.Mutex
	dests   map[string]*destination
	started bool
	closed  bool
	nonce   string

	joinedMu sync.Mutex
	joined   map[int64][]string // room NID → servers with joined members
	roomNIDs map[string]int64   // room ID → NID, as the fan-out met them

	aclMu    sync.Mutex
	acls     map[string]*serverACL // room ID → its ACL (nil: none), see roomACL
	aclGen   uint64                // bumped by every forgetACL
	outMu    sync.Mutex
	outs     []announced // outputs announced since the fan-out last looked
	outsLost bool        // too many to keep: the fan-out reads the stream

	directMu sync.Mutex
	direct   map[int64]int // first stream row of direct sends in flight → how many

	requeueMu    sync.Mutex
	requeueFloor int64 // see storage.RequeuePDUs

	originMu   sync.Mutex
	originBusy map[string]chan struct{} // origin → closed when its transaction is done
}

// New makes the federation component. Call Start to begin sending.
func New(cfg Config, db *storage.DB, rs *roomserver.Roomserver) (*Federation, error) {
	if cfg.Verifier == nil {
		return nil, errors.New("federation: no verifier configured")
	}
	if cfg.Transport == nil {
		return nil, errors.New("federation: no transport configured")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.MaxQueuedPDUs <= 0 {
		cfg.MaxQueuedPDUs = 100_000
	}
	if cfg.MaxQueuedEDUs <= 0 {
		cfg.MaxQueuedEDUs = 1000
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 60 * time.Second
	}
	if cfg.GapTimeout <= 0 {
		cfg.GapTimeout = 10 * time.Second
	}
	if err := db.MigrateRooms(); err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	if err := db.MigrateFederation(); err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Federation{
		cfg: cfg, db: db, rs: rs, log: cfg.Logger.With("component", "federation"),
		ctx: ctx, cancel: cancel,
		fanWake:      make(chan struct{}, 1),
		dests:        map[string]*destination{},
		joined:       map[int64][]string{},
		acls:         map[string]*serverACL{},
		roomNIDs:     map[string]int64{},
		originBusy:   map[string]chan struct{}{},
		direct:       map[int64]int{},
		requeueFloor: 1,
		nonce:        fmt.Sprintf("%x", time.Now().UnixNano()),
	}
	f.client = fclient.NewFederationClient(
		[]*fclient.SigningIdentity{{ServerName: cfg.ServerName, KeyID: cfg.KeyID, PrivateKey: cfg.PrivateKey}},
		fclient.WithTransport(cfg.Transport),
		fclient.WithSkipVerify(true),
		fclient.WithTimeout(cfg.RequestTimeout),
		fclient.WithUserAgent("Hearth"),
	)
	f.vis = newVisibility(db)
	f.routes()
	return f, nil
}

// Client is the outbound federation client, signing as this server. The
// backfill component uses it for /backfill, /state_ids and /event.
func (f *Federation) Client() fclient.FederationClient { return f.client }

// ServerName is this server's name.
func (f *Federation) ServerName() spec.ServerName { return f.cfg.ServerName }

// Start begins queueing new events and sending what is queued, including
// what was queued before a restart.
func (f *Federation) Start() error {
	f.destMu.Lock()
	if f.started || f.closed {
		f.destMu.Unlock()
		return nil
	}
	f.started = true
	f.destMu.Unlock()
	cursor, err := f.db.FedCursor(f.ctx)
	if err != nil {
		return fmt.Errorf("federation: %w", err)
	}
	queued, err := f.db.QueuedDestinations(f.ctx)
	if err != nil {
		return fmt.Errorf("federation: %w", err)
	}
	if err := f.db.PruneFedTxns(f.ctx, time.Now().Add(-txnMemory).UnixMilli()); err != nil {
		f.log.Warn("pruning old transactions", "err", err)
	}
	f.wg.Add(1)
	go f.fanout(cursor)
	for d, n := range queued {
		dest := f.destination(d)
		dest.addQueued(n)
		f.kick(dest)
	}
	return nil
}

// Close stops the senders (what is queued stays queued) and waits for
// them. It does not close the database.
func (f *Federation) Close() {
	f.destMu.Lock()
	if f.closed {
		f.destMu.Unlock()
		return
	}
	f.closed = true
	f.destMu.Unlock()
	f.cancel()
	f.wg.Wait()
}

// OnOutput is the roomserver's output hook: it wakes the fan-out, which
// reads the new stream rows and queues each event for the servers that
// must get it (or passes over those that plainly concern nobody else).
// It never blocks.
func (f *Federation) OnOutput(outs []roomserver.Output) {
	ours := string(f.cfg.ServerName)
	for _, o := range outs {
		if len(o.Adds) > 0 || len(o.Removes) > 0 {
			f.forgetACL(o.RoomID)
		}
	}
	f.outMu.Lock()
	if len(f.outs)+len(outs) > maxAnnounced {
		f.outs, f.outsLost = f.outs[:0], true
	} else {
		for _, o := range outs {
			stateless := len(o.Adds) == 0 && len(o.Removes) == 0
			f.outs = append(f.outs, announced{
				row: storage.FedStreamRow{
					Pos: o.Pos, RoomNID: o.RoomNID, RoomID: o.RoomID, EventNID: o.EventNID,
					EventID: o.Event.EventID(), JSON: o.Event.JSON(), StateChanged: !stateless,
				},
				stateless: stateless,
				ours:      stateless && serverOf(string(o.Event.SenderID())) == ours,
			})
		}
	}
	f.outMu.Unlock()
	select {
	case f.fanWake <- struct{}{}:
	default:
	}
}

// Handler serves /_matrix/federation/... and /_matrix/key/v2/server.
func (f *Federation) Handler() http.Handler { return f.mux }
