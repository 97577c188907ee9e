package syncapi

import (
	"bytes"
	"fmt"
	"slices"
	"sync"

	"hearth/node/storage"
)

// A /messages page's events are the request's own (history paging does
// not fill the event cache: see reader.lookOnly), so they need not be
// built one allocation at a time. pageArena formats them into slabs of
// events and large buffers of client JSON, both recycled once the page
// is written, and reuses the strings that repeat from event to event
// (types, senders, memberships). Garbage collection is a large share of
// a page's cost; this takes a page of a hundred events from several
// hundred allocations (~150 KB) to a few small ones.
//
// Its events must not outlive the request: never cache them, and call
// release only when nothing refers to them any more.
type pageArena struct {
	// Slabs of events and buffers of client JSON, the current one last.
	// A slab never grows (it would move the events handed out).
	slabs   []*[]event
	bufs    []*[]byte
	senders lastSender
}

// lastSender remembers the last sender decoded, raw (still quoted) and as
// a string: a page is mostly a few senders' events in a row.
type lastSender struct {
	raw []byte
	s   string
}

// arenaChunk is the size of a JSON buffer: a page of a hundred chat
// messages (~350 bytes each) fits in one or two. arenaSlab is the number
// of events in a slab.
const (
	arenaChunk = 32 << 10
	arenaSlab  = 64
)

var (
	arenaBufs = sync.Pool{New: func() any {
		b := make([]byte, 0, arenaChunk)
		return &b
	}}
	arenaSlabs = sync.Pool{New: func() any {
		s := make([]event, 0, arenaSlab)
		return &s
	}}
)

func newPageArena() *pageArena { return &pageArena{} }

// release gives the arena's slabs and buffers back for other pages, and
// empties it: every event it handed out is then invalid.
func (a *pageArena) release() {
	for _, sp := range a.slabs {
		clear((*sp)[:cap(*sp)]) // let go of the strings the events hold
		*sp = (*sp)[:0]
		arenaSlabs.Put(sp)
	}
	for _, bp := range a.bufs {
		if cap(*bp) == arenaChunk { // not one made for an outsize event
			// Zeroed, so that JSON used after release is plainly broken
			// rather than quietly another page's events.
			clear(*bp)
			*bp = (*bp)[:0]
			arenaBufs.Put(bp)
		}
	}
	clear(a.slabs)
	clear(a.bufs)
	*a = pageArena{slabs: a.slabs[:0], bufs: a.bufs[:0]}
}

// parse formats a stored event for clients, into the arena. Its output
// is what parseEvent gives, byte for byte (a test holds them together).
func (a *pageArena) parse(roomID string, se *storage.SyncEvent) (*event, error) {
	// The client form is never longer than the stored form plus the room
	// ID and the few keys it adds, unless a name needs escaping (then
	// append moves the buffer, which is only slower).
	need := len(se.JSON) + len(roomID) + 128
	if n := len(a.bufs); n == 0 || cap(*a.bufs[n-1])-len(*a.bufs[n-1]) < need {
		var bp *[]byte
		if need <= arenaChunk {
			bp = arenaBufs.Get().(*[]byte)
		} else {
			b := make([]byte, 0, need)
			bp = &b
		}
		a.bufs = append(a.bufs, bp)
	}
	if n := len(a.slabs); n == 0 || len(*a.slabs[n-1]) == arenaSlab {
		a.slabs = append(a.slabs, arenaSlabs.Get().(*[]event))
	}
	sp, bp := a.slabs[len(a.slabs)-1], a.bufs[len(a.bufs)-1]
	*sp = append(*sp, event{NID: se.NID, ID: se.ID, Redacted: se.Redacted, StreamPos: se.StreamPos, SnapshotNID: se.SnapshotNID})
	ev := &(*sp)[len(*sp)-1]
	start := len(*bp)
	b, err := appendClientEvent(*bp, ev, roomID, se, &a.senders)
	if err != nil {
		*sp = (*sp)[:len(*sp)-1]
		return nil, err
	}
	ev.unsignedAt -= start
	// Capped, so that no later append (withTxnID copies) can write into
	// the next event.
	ev.JSON = b[start:len(b):len(b)]
	*bp = b
	return ev, nil
}

// appendClientEvent reads a stored event and appends its client form to
// b: it fills in ev's fields from se's JSON (all but JSON, and unsignedAt
// as an index into b). senders may be nil. parseEvent is it with a nil b.
func appendClientEvent(b []byte, ev *event, roomID string, se *storage.SyncEvent, senders *lastSender) ([]byte, error) {
	var content, unsigned, ts []byte
	var redacts string
	bad := false
	str := func(v []byte) string {
		s, ok := jsonString(v)
		bad = bad || !ok
		return s
	}
	err := eachField(se.JSON, func(k, v []byte) bool {
		switch string(k) {
		case `"type"`:
			if t, ok := knownType(v); ok {
				ev.Type = t
			} else {
				ev.Type = str(v)
			}
		case `"sender"`:
			if senders == nil {
				ev.Sender = str(v)
				break
			}
			if senders.raw == nil || !bytes.Equal(v, senders.raw) {
				s, ok := jsonString(v)
				if !ok {
					bad = true
					break
				}
				senders.s, senders.raw = s, append(senders.raw[:0], v...)
			}
			ev.Sender = senders.s
		case `"state_key"`:
			sk := str(v)
			ev.StateKey = &sk
		case `"content"`:
			content = v
		case `"unsigned"`:
			unsigned = v
		case `"origin_server_ts"`:
			ts = v
		case `"redacts"`:
			redacts = str(v)
		}
		return !bad
	})
	if err != nil || bad || ev.Type == "" || len(content) == 0 || content[0] != '{' {
		return b, fmt.Errorf("event %s: malformed stored JSON", se.ID)
	}
	if len(ts) == 0 || ts[0] < '0' || ts[0] > '9' {
		ts = []byte("0")
	}
	if ev.Type == "m.room.member" || ev.Type == "m.room.redaction" || ev.Type == "m.room.history_visibility" ||
		bytes.Contains(content, []byte(`"url"`)) {
		eachField(content, func(k, v []byte) bool {
			switch string(k) {
			case `"membership"`:
				if m, ok := knownMembership(v); ok {
					ev.Membership = m
				} else {
					ev.Membership, _ = jsonString(v)
				}
			case `"history_visibility"`:
				ev.Visibility, _ = jsonString(v)
			case `"url"`:
				ev.HasURL = len(v) > 0 && v[0] == '"'
			case `"redacts"`:
				if redacts == "" && ev.Type == "m.room.redaction" {
					redacts, _ = jsonString(v)
				}
			}
			return true
		})
	}

	// Sized as parseEvent sizes its buffer (nothing to do in an arena's).
	b = slices.Grow(b, len(content)+len(unsigned)+len(ev.ID)+len(roomID)+len(ev.Sender)+len(ev.Type)+128)
	b = append(b, `{"content":`...)
	b = append(b, content...)
	b = append(b, `,"event_id":`...)
	b = appendString(b, ev.ID)
	b = append(b, `,"origin_server_ts":`...)
	b = append(b, ts...)
	b = append(b, `,"room_id":`...)
	b = appendString(b, roomID)
	b = append(b, `,"sender":`...)
	b = appendString(b, ev.Sender)
	if ev.StateKey != nil {
		b = append(b, `,"state_key":`...)
		b = appendString(b, *ev.StateKey)
	}
	b = append(b, `,"type":`...)
	b = appendString(b, ev.Type)
	if redacts != "" {
		b = append(b, `,"redacts":`...)
		b = appendString(b, redacts)
	}
	b = append(b, `,"unsigned":`...)
	ev.unsignedAt = len(b)
	if len(unsigned) >= 2 && unsigned[0] == '{' {
		b = append(b, unsigned...)
	} else {
		b = append(b, "{}"...)
	}
	return append(b, '}'), nil
}

// knownType returns the common event types without allocating a string
// for each event (a switch on string(v) does not allocate).
func knownType(v []byte) (string, bool) {
	switch string(v) {
	case `"m.room.message"`:
		return "m.room.message", true
	case `"m.room.member"`:
		return "m.room.member", true
	case `"m.room.encrypted"`:
		return "m.room.encrypted", true
	case `"m.reaction"`:
		return "m.reaction", true
	case `"m.room.redaction"`:
		return "m.room.redaction", true
	case `"m.sticker"`:
		return "m.sticker", true
	case `"m.room.create"`:
		return "m.room.create", true
	case `"m.room.power_levels"`:
		return "m.room.power_levels", true
	case `"m.room.join_rules"`:
		return "m.room.join_rules", true
	case `"m.room.history_visibility"`:
		return "m.room.history_visibility", true
	case `"m.room.name"`:
		return "m.room.name", true
	case `"m.room.topic"`:
		return "m.room.topic", true
	}
	return "", false
}

// knownMembership is knownType for m.room.member's membership.
func knownMembership(v []byte) (string, bool) {
	switch string(v) {
	case `"join"`:
		return "join", true
	case `"leave"`:
		return "leave", true
	case `"invite"`:
		return "invite", true
	case `"ban"`:
		return "ban", true
	case `"knock"`:
		return "knock", true
	}
	return "", false
}
