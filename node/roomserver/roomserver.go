package roomserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"hearth/node/storage"
)

// Roomserver is the node's room state machine.
type Roomserver struct {
	db  *storage.DB
	cfg Config

	mu     sync.Mutex
	rooms  map[string]*room
	closed bool
	wg     sync.WaitGroup

	nids   nidCache
	blocks blockCache
	pdus   pduCache
	refsMu sync.Mutex
	refs   map[string]roomRef

	lastCreate int64 // the newest create event's origin_server_ts; guarded by mu
}

// New opens the roomserver on db, migrating its tables.
func New(db *storage.DB, cfg Config) (*Roomserver, error) {
	if err := db.MigrateRooms(); err != nil {
		return nil, fmt.Errorf("roomserver: %w", err)
	}
	if cfg.DefaultRoomVersion == "" {
		cfg.DefaultRoomVersion = StableVersions[0]
	}
	if cfg.OnOutput == nil {
		cfg.OnOutput = func([]Output) {}
	}
	return &Roomserver{db: db, cfg: cfg, rooms: map[string]*room{}, nids: newNIDCache(), refs: map[string]roomRef{}}, nil
}

// Close stops the room workers once their queued requests are done.
func (rs *Roomserver) Close() {
	rs.mu.Lock()
	if rs.closed {
		rs.mu.Unlock()
		return
	}
	rs.closed = true
	for _, r := range rs.rooms {
		close(r.queue)
	}
	rs.mu.Unlock()
	rs.wg.Wait()
}

var errClosed = errors.New("roomserver: closed")

// worker returns the worker of a room, starting it if needed. Unknown
// rooms get ErrRoomNotFound without a worker being started.
func (rs *Roomserver) worker(ctx context.Context, roomID string) (*room, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.closed {
		return nil, errClosed
	}
	if r := rs.rooms[roomID]; r != nil {
		return r, nil
	}
	row, err := rs.db.RoomByID(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrRoomNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("roomserver: room %s: %w", roomID, err)
	}
	r := rs.startRoom(row)
	return r, nil
}

func (rs *Roomserver) startRoom(row *storage.Room) *room {
	r := &room{rs: rs, row: *row, queue: make(chan *request, 64), pending: pendingNIDs{}}
	r.idle.Store(true) // nothing in flight yet
	rs.rooms[row.ID] = r
	rs.wg.Add(1)
	go r.run()
	return r
}

// createTime is when a new room's create event says it was made: a
// millisecond after the last one at least. In versions whose room IDs
// are the hash of the create event, two rooms one creator makes alike
// within a millisecond would otherwise be one event, and one room ID.
func (rs *Roomserver) createTime() time.Time {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.lastCreate = max(time.Now().UnixMilli(), rs.lastCreate+1)
	return time.UnixMilli(rs.lastCreate)
}

// CreateRoom creates a room of the given version (DefaultRoomVersion if
// empty): the create event with createContent (room_version, and the
// creator where the version needs it, are filled in), then evs in order,
// atomically.
func (rs *Roomserver) CreateRoom(ctx context.Context, version gomatrixserverlib.RoomVersion, creator string, createContent json.RawMessage, evs []NewEvent) (string, error) {
	if version == "" {
		version = rs.cfg.DefaultRoomVersion
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil || !slices.Contains(SupportedVersions, version) {
		return "", &UnsupportedVersionError{Version: string(version)}
	}
	content := map[string]json.RawMessage{}
	if len(createContent) > 0 {
		if err := json.Unmarshal(createContent, &content); err != nil {
			return "", &BadEventError{Reason: "creation content is not a JSON object"}
		}
	}
	content["room_version"], _ = json.Marshal(version)
	if version == gomatrixserverlib.RoomVersionV10 {
		content["creator"], _ = json.Marshal(creator)
	}
	cc, _ := json.Marshal(content)

	roomID := ""
	if !verImpl.DomainlessRoomIDs() {
		var b [9]byte
		rand.Read(b[:])
		roomID = "!" + hex.EncodeToString(b[:]) + ":" + string(rs.cfg.ServerName)
	}
	empty := ""
	create := NewEvent{Sender: creator, Type: spec.MRoomCreate, StateKey: &empty, Content: cc}

	r := &room{rs: rs, row: storage.Room{ID: roomID, Version: string(version)}, queue: make(chan *request, 64), pending: pendingNIDs{}}
	r.ver = verImpl
	r.st = roomState{state: map[tuple]*entry{}}
	var outs []Output
	err = rs.db.Write(ctx, func(tx *storage.Tx) error {
		outs = nil
		ev, err := r.build(create, nil, 0, rs.createTime())
		if err != nil {
			return err
		}
		r.row.ID = ev.RoomID().String()
		if r.row.NID, err = storage.InsertRoom(tx, r.row.ID, string(version)); err != nil {
			return err
		}
		if r.st.snapshot, err = storage.InsertSnapshot(tx, r.row.NID, r.st.blocks[:]); err != nil {
			return err
		}
		out, err := r.store(tx, ev)
		if err != nil {
			return err
		}
		outs = append(outs, out)
		for _, ne := range evs {
			o, _, err := r.send(tx, ne)
			if err != nil {
				return err
			}
			outs = append(outs, o)
		}
		return storage.UpdateRoom(tx, &r.row)
	})
	if err != nil {
		return "", err
	}
	rs.nids.commit(r.pending)
	r.loaded = true
	rs.mu.Lock()
	if rs.closed {
		rs.mu.Unlock()
		return "", errClosed
	}
	rs.rooms[r.row.ID] = r
	rs.wg.Add(1)
	go r.run()
	rs.mu.Unlock()
	rs.cfg.OnOutput(outs)
	return r.row.ID, nil
}

// Send builds, authorises and stores events in a room, in order and
// atomically, returning their IDs once committed.
func (rs *Roomserver) Send(ctx context.Context, roomID string, evs ...NewEvent) ([]string, error) {
	r, err := rs.worker(ctx, roomID)
	if err != nil {
		return nil, err
	}
	// On ctx's end the request may still commit; the caller's retry with
	// the same transaction ID finds it.
	res, err := r.call(ctx, &request{ctx: ctx, local: evs, done: make(chan result, 1)})
	if err != nil {
		return nil, err
	}
	return res.ids, res.err
}

func (rs *Roomserver) parse(version, eventID string, js []byte, redacted bool) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		return nil, err
	}
	return verImpl.NewEventFromTrustedJSONWithEventID(eventID, js, redacted)
}

// userIDForSender maps sender IDs to user IDs: they are the same in every
// room version Hearth runs (no pseudo-IDs).
func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// logger for the package.
var log = slog.Default().With("component", "roomserver")

// MakeEvent builds the unsigned form of an event a remote user wants to
// send here (make_join, make_leave): prev events, depth and auth events
// from the room's current state. The event is not checked or stored.
func (rs *Roomserver) MakeEvent(ctx context.Context, roomID string, ne NewEvent) (*gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error) {
	r, err := rs.worker(ctx, roomID)
	if err != nil {
		return nil, "", err
	}
	var proto *gomatrixserverlib.ProtoEvent
	var version gomatrixserverlib.RoomVersion
	req := &request{ctx: ctx, done: make(chan result, 1), read: func(r *room) error {
		if r.row.SnapshotNID == 0 {
			return ErrRoomNotFound // heard of, but we hold no state
		}
		eb, err := r.builder(ne, r.extIDs, r.row.Depth)
		if err != nil {
			return err
		}
		version = r.ver.Version()
		proto = &gomatrixserverlib.ProtoEvent{
			SenderID: eb.SenderID, RoomID: eb.RoomID, Type: eb.Type, StateKey: eb.StateKey,
			PrevEvents: eb.PrevEvents, AuthEvents: eb.AuthEvents, Depth: eb.Depth, Content: eb.Content,
		}
		return nil
	}}
	res, err := r.call(ctx, req)
	if err != nil {
		return nil, "", err
	}
	return proto, version, res.err
}
