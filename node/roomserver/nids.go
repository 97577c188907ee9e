package roomserver

import (
	"errors"
	"sync"

	"hearth/node/storage"
)

// nidCache remembers the NIDs of event types and state keys. A NID is
// assigned inside a write transaction and may yet be rolled back, so new
// ones wait in a batch's pending set and reach the shared cache only once
// committed.
type nidCache struct {
	mu sync.RWMutex
	m  map[nidKey]int64
}

type nidKey struct {
	isType bool
	s      string
}

// pendingNIDs are the NIDs one batch looked up or assigned.
type pendingNIDs map[nidKey]int64

func newNIDCache() nidCache { return nidCache{m: map[nidKey]int64{}} }

func (c *nidCache) typeNID(tx *storage.Tx, p pendingNIDs, t string) (int64, error) {
	return c.get(tx, p, nidKey{true, t})
}

func (c *nidCache) keyNID(tx *storage.Tx, p pendingNIDs, k string) (int64, error) {
	return c.get(tx, p, nidKey{false, k})
}

func (c *nidCache) get(tx *storage.Tx, p pendingNIDs, k nidKey) (int64, error) {
	c.mu.RLock()
	nid, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return nid, nil
	}
	if nid, ok := p[k]; ok {
		return nid, nil
	}
	assign := storage.KeyNID
	if k.isType {
		assign = storage.TypeNID
	}
	nid, err := assign(tx, k.s)
	if err != nil {
		return 0, err
	}
	p[k] = nid
	return nid, nil
}

// commit publishes a committed batch's NIDs.
func (c *nidCache) commit(p pendingNIDs) {
	if len(p) == 0 {
		return
	}
	c.mu.Lock()
	for k, v := range p {
		c.m[k] = v
	}
	c.mu.Unlock()
	clear(p)
}

// lookup finds a NID without assigning one: a type or state key never
// seen has no state to find.
func (c *nidCache) lookup(tx *storage.Tx, p pendingNIDs, isType bool, s string) (int64, bool, error) {
	k := nidKey{isType, s}
	c.mu.RLock()
	nid, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return nid, true, nil
	}
	if nid, ok := p[k]; ok {
		return nid, true, nil
	}
	nid, err := storage.LookupNID(tx, isType, s)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	p[k] = nid
	return nid, true, nil
}
