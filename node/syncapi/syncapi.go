// Package syncapi owns what clients read of rooms: /sync (initial,
// incremental, long-poll), /messages, /context and /event, sync tokens and
// pagination tokens, filters, history visibility, and the notifier that
// wakes long-polls. It also owns the ephemeral streams: typing and
// presence (in memory), read receipts, to-device messages and device-list
// changes (in SQLite), with unread notification counts.
//
// It reads the roomserver's output (the stream table: one row per event
// with the state it added and removed) through storage's SyncSnapshot,
// always inside one read transaction per request, and advances state only
// by those adds and removes, never by replaying events. The roomserver
// tells it about new events through OnRoomEvents, the client API about
// account data, typing, receipts, presence, to-device messages and key
// changes through its On*/Send* methods, and the node's glue about other
// servers' EDUs through its Receive* methods; what other servers must
// hear of goes out through the Outbound the glue installs.
//
// It imports storage, httputil, clientevent and gomatrixserverlib; it must
// not import roomserver, clientapi or federation.
package syncapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/storage"
)

// Config tunes the syncer.
type Config struct {
	// MaxTimeout caps a long-poll's timeout (default 30s).
	MaxTimeout time.Duration
	// EventCacheSize is how many parsed events are kept (default 4096;
	// negative: none).
	EventCacheSize int
	Logger         *slog.Logger
	// Backfill, when set, fetches about limit events of a room's older
	// history from other servers when /messages reaches the start of what
	// this node holds. It reports whether it stored any.
	Backfill func(ctx context.Context, roomID string, limit int) (bool, error)
	// ServerName is this node's name: users of other servers get their
	// to-device messages, and hear of local users' presence, through
	// Outbound. Empty: every user is local.
	ServerName string
	// RemoteTypingTimeout ends a remote user's typing that their server
	// did not end (default 30s).
	RemoteTypingTimeout time.Duration
	// PresenceIdleAfter turns an online local user unavailable after this
	// long without activity (default 5 min); PresenceOfflineAfter turns
	// them offline after this long with no sync running (default 60s).
	PresenceIdleAfter, PresenceOfflineAfter time.Duration
}

// Syncer serves /sync, /messages and /context.
type Syncer struct {
	db     *storage.DB
	store  *storage.SyncStore
	cfg    Config
	log    *slog.Logger
	notify *notifier
	cache  *eventCache
	joined *joinedRooms

	typeMu sync.RWMutex
	types  map[int64]string // event type NID → type; NIDs never change
	// typeNIDs is types the other way round: the types looked up by name
	// that exist (one unknown now may exist later).
	typeNIDs map[string]int64
	// memberNID is m.room.member's type NID, once looked up.
	memberNID atomic.Int64

	filterMu sync.Mutex
	filters  map[filterKey]*Filter // stored filters never change
	// lazy tracks the members sent to lazy-loading devices.
	lazy *lazySent
	// conns holds the sliding sync connections.
	conns *connStore

	out       atomic.Pointer[Outbound]
	typing    *typingTable
	presence  *presenceTable
	acks      *toDeviceAcks
	ignored   *ignoredCache
	vis       *visCache
	unread    *unreadCache
	keyCounts *keyCountCache
	// hvNID is m.room.history_visibility's type NID and emptyNID the
	// empty state key's, once looked up.
	hvNID, emptyNID atomic.Int64

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type filterKey struct {
	user string
	id   int64
}

// New opens the syncer on db. It migrates the tables it reads (rooms and
// user data, which is idempotent) so it can be built before the
// roomserver and handed to it as its output consumer.
func New(db *storage.DB, cfg Config) (*Syncer, error) {
	if cfg.MaxTimeout <= 0 {
		cfg.MaxTimeout = 30 * time.Second
	}
	if cfg.EventCacheSize == 0 {
		cfg.EventCacheSize = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RemoteTypingTimeout <= 0 {
		cfg.RemoteTypingTimeout = 30 * time.Second
	}
	if cfg.PresenceIdleAfter <= 0 {
		cfg.PresenceIdleAfter = 5 * time.Minute
	}
	if cfg.PresenceOfflineAfter <= 0 {
		cfg.PresenceOfflineAfter = time.Minute
	}
	if err := db.MigrateRooms(); err != nil {
		return nil, fmt.Errorf("syncapi: %w", err)
	}
	if err := db.MigrateUserData(); err != nil {
		return nil, fmt.Errorf("syncapi: %w", err)
	}
	store, err := db.SyncStore()
	if err != nil {
		return nil, fmt.Errorf("syncapi: %w", err)
	}
	// To-device keys only need to outlive a client's or server's retries;
	// messages for deleted devices will never be read.
	if err := db.PruneToDevice(context.Background(), nowMS()-toDeviceKeyTTL.Milliseconds()); err != nil {
		store.Close()
		return nil, fmt.Errorf("syncapi: %w", err)
	}
	s := &Syncer{
		db:        db,
		store:     store,
		cfg:       cfg,
		log:       cfg.Logger,
		notify:    newNotifier(),
		cache:     newEventCache(cfg.EventCacheSize),
		joined:    newJoinedRooms(),
		types:     map[int64]string{},
		typeNIDs:  map[string]int64{},
		filters:   map[filterKey]*Filter{},
		lazy:      newLazySent(),
		conns:     newConnStore(maxConns, maxConnsPerDevice),
		typing:    newTypingTable(),
		presence:  newPresenceTable(),
		acks:      newToDeviceAcks(),
		ignored:   newIgnoredCache(),
		vis:       newVisCache(),
		unread:    newUnreadCache(),
		keyCounts: newKeyCountCache(),
		stop:      make(chan struct{}),
	}
	s.wg.Add(1)
	go s.presenceLoop()
	return s, nil
}

// Close stops the presence timer and releases the syncer's prepared
// queries. Call it before closing the database.
func (s *Syncer) Close() {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.store.Close()
	})
}

// roomsOf lists the rooms a user is joined to, from the cache when it
// has them. Never call it while holding a snapshot (the browser's single
// connection would be needed twice).
func (s *Syncer) roomsOf(ctx context.Context, userID string) ([]string, error) {
	if rooms, ok := s.joined.get(userID); ok {
		return rooms, nil
	}
	rooms, err := s.db.RoomsWithMembership(ctx, userID, "join")
	if err != nil {
		return nil, fmt.Errorf("syncapi: rooms of %s: %w", userID, err)
	}
	return rooms, nil
}

// IsJoined reports whether a user is joined to a room (unknown rooms:
// false), for checking what other servers claim about their users.
func (s *Syncer) IsJoined(ctx context.Context, roomID, userID string) (bool, error) {
	r, err := s.db.RoomByID(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("syncapi: room %s: %w", roomID, err)
	}
	m, err := s.db.Membership(ctx, userID, r.NID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("syncapi: membership: %w", err)
	}
	return m == "join", nil
}

// RoomEvent is one event that entered a room's stream, as the roomserver
// reports it after its commit.
type RoomEvent struct {
	Pos      int64
	RoomID   string
	Type     string
	StateKey *string
	Sender   string
	// Redacts is the event a redaction redacts ("" otherwise).
	Redacts string
}

// NewRoomEvent describes a stored event for OnRoomEvents.
func NewRoomEvent(pos int64, roomID string, pdu gomatrixserverlib.PDU) RoomEvent {
	ev := RoomEvent{Pos: pos, RoomID: roomID, Type: pdu.Type(), StateKey: pdu.StateKey(), Sender: string(pdu.SenderID())}
	if ev.Type == "m.room.redaction" {
		ev.Redacts = redactsOf(pdu)
	}
	return ev
}

// redactsOf finds a redaction's target: top level before room version 11,
// in content from 11 on.
func redactsOf(pdu gomatrixserverlib.PDU) string {
	if r := pdu.Redacts(); r != "" {
		return r
	}
	if !bytes.Contains(pdu.Content(), []byte(`"redacts"`)) {
		return ""
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	json.Unmarshal(pdu.Content(), &c)
	return c.Redacts
}

// OnRoomEvents is called after each roomserver commit with the events that
// entered the stream. It wakes the long-polls of users in those rooms and
// of users whose membership changed, and drops redacted events from the
// cache. It does not block.
func (s *Syncer) OnRoomEvents(evs []RoomEvent) {
	for i := range evs {
		ev := &evs[i]
		pos := ev.Pos
		advance := func(t *Token) { t.Room = max(t.Room, pos) }
		if ev.Redacts != "" {
			s.cache.redacted(ev.Redacts, pos)
		}
		s.notify.notifyFrom(roomKey(ev.RoomID), ev.Sender, advance)
		if ev.Type == "m.room.member" && ev.StateKey != nil {
			s.joined.invalidate(*ev.StateKey, pos)
			s.notify.notify(userKey(*ev.StateKey), advance)
		}
	}
}

// OnAccountData is called after a user's account data changed at pos.
func (s *Syncer) OnAccountData(userID string, pos int64) {
	s.notify.notify(userKey(userID), func(t *Token) { t.AccountData = max(t.AccountData, pos) })
}
