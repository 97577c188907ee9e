// Package syncapi owns what clients read of rooms: /sync (initial,
// incremental, long-poll), /messages and /context, sync tokens and
// pagination tokens, filters, and the notifier that wakes long-polls.
//
// It reads the roomserver's output (the stream table: one row per event
// with the state it added and removed) through storage's SyncSnapshot,
// always inside one read transaction per request, and advances state only
// by those adds and removes, never by replaying events. The roomserver
// tells it about new events through OnRoomEvents, the client API about
// account data through OnAccountData.
//
// It imports storage, httputil and gomatrixserverlib; it must not import
// roomserver, clientapi or federation.
package syncapi

import (
	"bytes"
	"context"
	"encoding/json"
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
	// memberNID is m.room.member's type NID, once looked up.
	memberNID atomic.Int64

	filterMu sync.Mutex
	filters  map[filterKey]*Filter // stored filters never change
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
	return &Syncer{
		db:      db,
		store:   store,
		cfg:     cfg,
		log:     cfg.Logger,
		notify:  newNotifier(),
		cache:   newEventCache(cfg.EventCacheSize),
		joined:  newJoinedRooms(),
		types:   map[int64]string{},
		filters: map[filterKey]*Filter{},
	}, nil
}

// Close releases the syncer's prepared queries. Call it before closing
// the database.
func (s *Syncer) Close() { s.store.Close() }

// RoomEvent is one event that entered a room's stream, as the roomserver
// reports it after its commit.
type RoomEvent struct {
	Pos      int64
	RoomID   string
	Type     string
	StateKey *string
	// Redacts is the event a redaction redacts ("" otherwise).
	Redacts string
}

// NewRoomEvent describes a stored event for OnRoomEvents.
func NewRoomEvent(pos int64, roomID string, pdu gomatrixserverlib.PDU) RoomEvent {
	ev := RoomEvent{Pos: pos, RoomID: roomID, Type: pdu.Type(), StateKey: pdu.StateKey()}
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
		s.notify.notify(roomKey(ev.RoomID), advance)
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
