package syncapi

import (
	"container/list"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Sliding sync connections (MSC4186 conn_id). Per connection the server
// remembers which rooms it has sent and up to which stream position, so
// a room that newly enters a window is sent in full (initial) while one
// the client already holds gets only what changed; and it knows which
// rooms to report as left. This lives in memory only: a pos the server no
// longer knows (restart, eviction) gets M_UNKNOWN_POS and the client
// starts the connection over, which is always correct.

const (
	// maxConnsPerDevice bounds one device's connections (Element X uses
	// a couple; a misbehaving client must not evict other devices').
	maxConnsPerDevice = 10
	// maxConns bounds a node's connections, least recently used first out.
	maxConns = 10000
	// connHistory is how many of a connection's recent positions stay
	// valid, so a client may retry a request whose answer it lost, or
	// reuse a pos a long-poll gave back unchanged.
	connHistory = 4
)

// connKey names a connection: one device's conn_id.
type connKey struct{ user, device, conn string }

// sentRoom is what the client holds of a room on a connection.
type sentRoom struct {
	pos    int64  // the room stream position the client has the room up to
	limit  int    // the timeline_limit it was last sent with
	params string // the room's required_state and timeline_limit, as sent
}

// sentRooms is the rooms a connection was sent, as of one pos. A map is
// never changed once stored: each answer stores a new one.
type sentRooms map[string]sentRoom

type connPos struct {
	pos   string
	rooms sentRooms
}

type slidingConn struct {
	key     connKey
	history []connPos // oldest first
	elem    *list.Element
}

// connStore holds a node's sliding sync connections.
type connStore struct {
	mu        sync.Mutex
	conns     map[connKey]*slidingConn
	lru       *list.List // of *slidingConn, most recently used in front
	perDevice map[[2]string]int
	maxConns  int
	maxPerDev int
}

func newConnStore(maxConns, maxPerDevice int) *connStore {
	return &connStore{conns: map[connKey]*slidingConn{}, lru: list.New(), perDevice: map[[2]string]int{},
		maxConns: maxConns, maxPerDev: maxPerDevice}
}

// lookup returns the rooms a connection had been sent as of pos, or false
// if the server does not know that pos on that connection.
func (cs *connStore) lookup(k connKey, pos string) (sentRooms, bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.conns[k]
	if c == nil {
		return nil, false
	}
	for i := len(c.history) - 1; i >= 0; i-- {
		if c.history[i].pos == pos {
			cs.lru.MoveToFront(c.elem)
			return c.history[i].rooms, true
		}
	}
	return nil, false
}

// store records a new pos of a connection, creating it (and evicting the
// least recently used connections over the bounds) if needed.
func (cs *connStore) store(k connKey, pos string, rooms sentRooms) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.conns[k]
	if c == nil {
		dev := [2]string{k.user, k.device}
		if cs.perDevice[dev] >= cs.maxPerDev {
			// The device's least recently used connection goes.
			for e := cs.lru.Back(); e != nil; e = e.Prev() {
				if old := e.Value.(*slidingConn); old.key.user == k.user && old.key.device == k.device {
					cs.remove(old)
					break
				}
			}
		}
		for len(cs.conns) >= cs.maxConns {
			cs.remove(cs.lru.Back().Value.(*slidingConn))
		}
		c = &slidingConn{key: k}
		c.elem = cs.lru.PushFront(c)
		cs.conns[k] = c
		cs.perDevice[dev]++
	} else {
		cs.lru.MoveToFront(c.elem)
	}
	c.history = append(c.history, connPos{pos, rooms})
	if len(c.history) > connHistory {
		c.history = slicesClone(c.history[len(c.history)-connHistory:])
	}
}

func (cs *connStore) remove(c *slidingConn) {
	cs.lru.Remove(c.elem)
	delete(cs.conns, c.key)
	dev := [2]string{c.key.user, c.key.device}
	if cs.perDevice[dev]--; cs.perDevice[dev] <= 0 {
		delete(cs.perDevice, dev)
	}
}

// slicesClone copies so the dropped history's maps can be collected.
func slicesClone(h []connPos) []connPos { return append([]connPos(nil), h...) }

// posSeq makes every pos a connection is given distinct, even when no
// stream moved between two answers (a widened range with nothing new).
var posSeq atomic.Int64

// makePos is the pos the client sends back: the sync token (the streams'
// positions) and a sequence number naming the connection's room record.
func makePos(t Token) string {
	return t.String() + "~" + strconv.FormatInt(posSeq.Add(1), 10)
}

// splitPos parses a pos into its token.
func splitPos(pos string) (Token, bool) {
	tok, seq, ok := strings.Cut(pos, "~")
	if !ok || seq == "" {
		return Token{}, false
	}
	if _, err := strconv.ParseUint(seq, 10, 63); err != nil {
		return Token{}, false
	}
	t, err := ParseToken(tok)
	if err != nil {
		return Token{}, false
	}
	return t, true
}

func (s *Syncer) slidingConns() *connStore { return s.conns }
