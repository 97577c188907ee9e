package syncapi

import (
	"container/list"
	"encoding/json"
	"sync"

	"hearth/node/storage"
)

// event is a parsed event in the client format. It is immutable once
// built and shared between requests through the cache.
type event struct {
	NID        int64
	ID         string
	Type       string
	StateKey   *string
	Sender     string
	Redacted   bool
	HasURL     bool
	Membership string // for m.room.member events
	// Visibility is an m.room.history_visibility event's setting.
	Visibility string
	// StreamPos and SnapshotNID place the event: its stream position (0:
	// none) and the state snapshot before it (0: an outlier).
	StreamPos, SnapshotNID int64
	// JSON is the client format with "unsigned" last, starting at
	// unsignedAt, so a per-request transaction_id can be spliced in
	// without re-encoding.
	JSON       []byte
	unsignedAt int
}

// parseEvent formats a stored event for clients. It reads the stored
// (canonical, already validated) JSON's top-level fields directly rather
// than building a PDU: this is the hot path of /sync and /messages. The
// output is what clientevent.Format gives (a test holds them together),
// with "unsigned" always present and last.
func parseEvent(roomID string, se *storage.SyncEvent) (*event, error) {
	ev := &event{NID: se.NID, ID: se.ID, Redacted: se.Redacted, StreamPos: se.StreamPos, SnapshotNID: se.SnapshotNID}
	b, err := appendClientEvent(nil, ev, roomID, se, nil)
	if err != nil {
		return nil, err
	}
	ev.JSON = b
	return ev, nil
}

// withTxnID returns the event's JSON with unsigned.transaction_id set,
// which the sending device uses to match its local echo.
func (ev *event) withTxnID(txnID string) []byte {
	i := ev.unsignedAt + 1 // just inside unsigned's '{'
	b := make([]byte, 0, len(ev.JSON)+len(txnID)+24)
	b = append(b, ev.JSON[:i]...)
	b = append(b, `"transaction_id":`...)
	b = appendString(b, txnID)
	if ev.JSON[i] != '}' {
		b = append(b, ',')
	}
	return append(b, ev.JSON[i:]...)
}

// stripped is the stripped state form used in invite_state and
// knock_state: type, state_key, sender and content.
func (ev *event) stripped() []byte {
	var m struct {
		Content json.RawMessage `json:"content"`
	}
	json.Unmarshal(ev.JSON, &m)
	if len(m.Content) == 0 {
		m.Content = json.RawMessage("{}")
	}
	b := make([]byte, 0, len(m.Content)+128)
	b = append(b, `{"content":`...)
	b = append(b, m.Content...)
	b = append(b, `,"sender":`...)
	b = appendString(b, ev.Sender)
	b = append(b, `,"state_key":`...)
	if ev.StateKey != nil {
		b = appendString(b, *ev.StateKey)
	} else {
		b = append(b, `""`...)
	}
	b = append(b, `,"type":`...)
	b = appendString(b, ev.Type)
	return append(b, '}')
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// eventCache keeps parsed events by NID. Events change only when
// redacted: a redaction notified at stream position p evicts its target,
// and no read older than p may insert afterwards (it may have read the
// unredacted JSON).
type eventCache struct {
	mu     sync.Mutex
	max    int
	ll     list.List // of *event, most recent first
	byNID  map[int64]*list.Element
	byID   map[string]int64
	redPos int64 // newest redaction notified
}

func newEventCache(max int) *eventCache {
	return &eventCache{max: max, byNID: map[int64]*list.Element{}, byID: map[string]int64{}}
}

func (c *eventCache) get(nid int64) *event {
	if c.max <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.byNID[nid]
	if el == nil {
		return nil
	}
	c.ll.MoveToFront(el)
	return el.Value.(*event)
}

// put caches ev, read at stream position readPos.
func (c *eventCache) put(ev *event, readPos int64) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if readPos < c.redPos {
		return
	}
	if el := c.byNID[ev.NID]; el != nil {
		el.Value = ev
		c.ll.MoveToFront(el)
		return
	}
	c.byNID[ev.NID] = c.ll.PushFront(ev)
	c.byID[ev.ID] = ev.NID
	for c.ll.Len() > c.max {
		old := c.ll.Remove(c.ll.Back()).(*event)
		delete(c.byNID, old.NID)
		delete(c.byID, old.ID)
	}
}

// redacted evicts an event that a redaction at pos redacted.
func (c *eventCache) redacted(eventID string, pos int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.redPos = max(c.redPos, pos)
	if nid, ok := c.byID[eventID]; ok {
		c.ll.Remove(c.byNID[nid])
		delete(c.byNID, nid)
		delete(c.byID, eventID)
	}
}
