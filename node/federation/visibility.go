package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"hearth/node/storage"
)

// NIDs the roomserver's schema preassigns (storage/rooms.go).
const (
	memberTypeNID     = 5
	visibilityTypeNID = 7
	emptyKeyNID       = 1
)

// visibility decides which events another server may see, by the room's
// history visibility and that server's users' memberships at each event
// (the spec's rules for users, applied to any user of the server):
//   - world_readable: any server;
//   - shared: a server with a member joined or invited at the event, or
//     joined now;
//   - invited: a server with a member joined or invited at the event;
//   - joined: a server with a member joined at the event.
//
// An outlier (state unknown) is visible to servers joined now. It reads
// state snapshots block by block and caches blocks (immutable) and the
// answer per (snapshot, server).
type visibility struct {
	db *storage.DB

	mu        sync.Mutex
	keyServer map[int64]string // member state key NID → the user's server
	blocks    map[int64][]storage.StateEntry
	snaps     map[snapKey]snapVis
}

type snapKey struct {
	snapshot int64
	server   string
}

// snapVis is what a snapshot says about one server.
type snapVis struct {
	visibility      string
	joined, invited bool
}

const visCacheSize = 20_000

func newVisibility(db *storage.DB) *visibility {
	return &visibility{db: db, keyServer: map[int64]string{}, blocks: map[int64][]storage.StateEntry{}, snaps: map[snapKey]snapVis{}}
}

// viewer is one server's view of events for one request: whether the
// server has a member joined now is read at most once a room, not once an
// event (a page of /backfill asks about a thousand).
type viewer struct {
	vis    *visibility
	server string
	joined map[int64]bool // room NID → joined now
}

func (v *visibility) viewer(server string) *viewer {
	return &viewer{vis: v, server: server, joined: map[int64]bool{}}
}

func (vw *viewer) joinedNow(ctx context.Context, roomNID int64) (bool, error) {
	if j, ok := vw.joined[roomNID]; ok {
		return j, nil
	}
	n, err := vw.vis.db.JoinedLocalCount(ctx, roomNID, vw.server)
	if err != nil {
		return false, err
	}
	vw.joined[roomNID] = n > 0
	return n > 0, nil
}

// allowed reports whether the server may see ev (a stored event).
func (vw *viewer) allowed(ctx context.Context, ev *storage.Event) (bool, error) {
	if ev.SnapshotNID == 0 {
		return vw.joinedNow(ctx, ev.RoomNID)
	}
	sv, err := vw.vis.atSnapshot(ctx, ev.SnapshotNID, vw.server)
	if err != nil {
		return false, err
	}
	// The event's own membership counts: a server sees its user's join.
	if ev.TypeNID == memberTypeNID && ev.KeyNID != 0 {
		servers, err := vw.vis.serversOf(ctx, map[int64]int64{ev.KeyNID: ev.NID})
		if err != nil {
			return false, err
		}
		if servers[ev.KeyNID] == vw.server {
			switch eventMembership(ev.JSON) {
			case "join":
				sv.joined = true
			case "invite":
				sv.invited = true
			}
		}
	}
	switch sv.visibility {
	case "world_readable":
		return true, nil
	case "joined":
		return sv.joined, nil
	case "invited":
		return sv.joined || sv.invited, nil
	}
	// shared, and anything unknown (the spec's default is shared)
	if sv.joined || sv.invited {
		return true, nil
	}
	return vw.joinedNow(ctx, ev.RoomNID)
}

func membershipOf(content []byte) string {
	var c struct {
		Membership string `json:"membership"`
	}
	json.Unmarshal(content, &c)
	return c.Membership
}

// eventMembership is a member event's content.membership, from its JSON.
func eventMembership(eventJSON []byte) string {
	var e struct {
		Content json.RawMessage `json:"content"`
	}
	json.Unmarshal(eventJSON, &e)
	return membershipOf(e.Content)
}

// atSnapshot reads the history visibility and server's memberships in a
// state snapshot.
func (v *visibility) atSnapshot(ctx context.Context, snapshot int64, server string) (snapVis, error) {
	k := snapKey{snapshot, server}
	v.mu.Lock()
	sv, ok := v.snaps[k]
	v.mu.Unlock()
	if ok {
		return sv, nil
	}
	blockNIDs, err := v.db.SnapshotBlocks(ctx, snapshot)
	if err != nil {
		return snapVis{}, fmt.Errorf("federation: snapshot %d: %w", snapshot, err)
	}
	var hvNID int64
	members := map[int64]int64{} // key NID → event NID
	for _, b := range blockNIDs {
		if b == 0 {
			continue
		}
		entries, err := v.block(ctx, b)
		if err != nil {
			return snapVis{}, err
		}
		for _, e := range entries {
			switch {
			case e.TypeNID == visibilityTypeNID && e.KeyNID == emptyKeyNID:
				hvNID = e.EventNID
			case e.TypeNID == memberTypeNID:
				members[e.KeyNID] = e.EventNID
			}
		}
	}
	servers, err := v.serversOf(ctx, members)
	if err != nil {
		return snapVis{}, err
	}
	var nids []int64
	if hvNID != 0 {
		nids = append(nids, hvNID)
	}
	for key, ev := range members {
		if servers[key] == server {
			nids = append(nids, ev)
		}
	}
	evs, err := v.db.EventsByNID(ctx, nids)
	if err != nil {
		return snapVis{}, fmt.Errorf("federation: visibility events: %w", err)
	}
	sv = snapVis{visibility: "shared"}
	for _, e := range evs {
		var c struct {
			Content struct {
				HistoryVisibility string `json:"history_visibility"`
				Membership        string `json:"membership"`
			} `json:"content"`
		}
		if json.Unmarshal(e.JSON, &c) != nil {
			continue
		}
		if e.NID == hvNID {
			if c.Content.HistoryVisibility != "" {
				sv.visibility = c.Content.HistoryVisibility
			}
			continue
		}
		switch c.Content.Membership {
		case "join":
			sv.joined = true
		case "invite":
			sv.invited = true
		}
	}
	v.mu.Lock()
	if len(v.snaps) > visCacheSize {
		clear(v.snaps)
	}
	v.snaps[k] = sv
	v.mu.Unlock()
	return sv, nil
}

func (v *visibility) block(ctx context.Context, nid int64) ([]storage.StateEntry, error) {
	v.mu.Lock()
	es, ok := v.blocks[nid]
	v.mu.Unlock()
	if ok {
		return es, nil
	}
	es, err := v.db.StateBlock(ctx, nid)
	if err != nil {
		return nil, fmt.Errorf("federation: state block %d: %w", nid, err)
	}
	v.mu.Lock()
	if len(v.blocks) > visCacheSize {
		clear(v.blocks)
	}
	v.blocks[nid] = es
	v.mu.Unlock()
	return es, nil
}

// serversOf maps member state key NIDs to their users' servers.
func (v *visibility) serversOf(ctx context.Context, members map[int64]int64) (map[int64]string, error) {
	out := make(map[int64]string, len(members))
	var missing []int64
	v.mu.Lock()
	for k := range members {
		if s, ok := v.keyServer[k]; ok {
			out[k] = s
		} else {
			missing = append(missing, k)
		}
	}
	v.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	keys, err := v.db.StateKeysByNID(ctx, missing)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if len(v.keyServer) > 10*visCacheSize {
		clear(v.keyServer)
	}
	for n, k := range keys {
		s := serverOf(k)
		v.keyServer[n] = s
		out[n] = s
	}
	v.mu.Unlock()
	return out, nil
}
