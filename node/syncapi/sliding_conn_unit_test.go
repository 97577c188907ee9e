package syncapi

import "testing"

// The node-wide bound evicts the least recently used connection, and a
// lookup counts as a use.
func TestConnStoreBounds(t *testing.T) {
	cs := newConnStore(3, 2)
	a, b, c, d := connKey{"@a:x", "D", ""}, connKey{"@b:x", "D", ""}, connKey{"@c:x", "D", ""}, connKey{"@d:x", "D", ""}
	cs.store(a, "p1", sentRooms{})
	cs.store(b, "p1", sentRooms{})
	cs.store(c, "p1", sentRooms{})
	if _, ok := cs.lookup(a, "p1"); !ok { // a is now the most recently used
		t.Fatal("a forgotten early")
	}
	cs.store(d, "p1", sentRooms{})
	if _, ok := cs.lookup(b, "p1"); ok {
		t.Error("least recently used connection kept over the bound")
	}
	for _, k := range []connKey{a, c, d} {
		if _, ok := cs.lookup(k, "p1"); !ok {
			t.Errorf("%v evicted", k)
		}
	}
	// Only the last connHistory positions of a connection stay valid.
	for i := range connHistory + 1 {
		cs.store(a, string(rune('A'+i)), sentRooms{})
	}
	if _, ok := cs.lookup(a, "A"); ok {
		t.Error("old position kept past the history")
	}
	if _, ok := cs.lookup(a, string(rune('A'+connHistory))); !ok {
		t.Error("newest position lost")
	}
	if len(cs.conns) != 3 || cs.lru.Len() != 3 {
		t.Errorf("store holds %d/%d connections", len(cs.conns), cs.lru.Len())
	}
}
