package roomserver

import (
	"fmt"
	"slices"
	"sync"

	"hearth/node/storage"
)

// stateKeyNIDs identifies a state slot by NIDs.
type stateKeyNIDs struct{ typeNID, keyNID int64 }

// stateMap is a full room state by NIDs: slot → event NID.
type stateMap map[stateKeyNIDs]int64

// snapshot is a stored state snapshot with its blocks loaded.
type snapshot struct {
	nid    int64
	blocks [numBlocks]int64
	state  stateMap
}

// blockCache keeps decoded state blocks and snapshots' block lists:
// neither changes once written. What a write read of its own rows is
// forgotten when the write fails (clear), as their NIDs are used again.
type blockCache struct {
	mu    sync.Mutex
	m     map[int64][]storage.StateEntry
	snaps map[int64][numBlocks]int64
}

const (
	maxCachedBlocks    = 4096
	maxCachedSnapshots = 1024
)

func (c *blockCache) clear() {
	c.mu.Lock()
	c.m, c.snaps = nil, nil
	c.mu.Unlock()
}

// snapshotBlocks returns a snapshot's block NIDs.
func (c *blockCache) snapshotBlocks(tx *storage.Tx, nid int64) ([numBlocks]int64, error) {
	return cachedLoad(&c.mu, &c.snaps, maxCachedSnapshots, nid, func() (blocks [numBlocks]int64, err error) {
		list, err := storage.SnapshotBlocksTx(tx, nid)
		copy(blocks[:], list)
		return blocks, err
	})
}

// cachedLoad returns (*m)[k], or reads it and keeps it: m is emptied when
// it holds limit entries (crude, but bounded).
func cachedLoad[K comparable, V any](mu *sync.Mutex, m *map[K]V, limit int, k K, read func() (V, error)) (V, error) {
	mu.Lock()
	v, ok := (*m)[k]
	mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := read()
	if err != nil {
		return v, err
	}
	mu.Lock()
	if *m == nil || len(*m) >= limit {
		*m = map[K]V{}
	}
	(*m)[k] = v
	mu.Unlock()
	return v, nil
}

// loadSnapshot reads a snapshot and its entries. Inside a write it must
// read through tx, as the snapshot may have been written by it.
func (rs *Roomserver) loadSnapshot(tx *storage.Tx, nid int64) (*snapshot, error) {
	blocks, err := rs.blocks.snapshotBlocks(tx, nid)
	if err != nil {
		return nil, fmt.Errorf("snapshot %d: %w", nid, err)
	}
	s := &snapshot{nid: nid, blocks: blocks, state: stateMap{}}
	for _, b := range blocks {
		if b == 0 {
			continue
		}
		es, err := rs.blockEntries(tx, b)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			s.state[stateKeyNIDs{e.TypeNID, e.KeyNID}] = e.EventNID
		}
	}
	return s, nil
}

func (rs *Roomserver) blockEntries(tx *storage.Tx, nid int64) ([]storage.StateEntry, error) {
	c := &rs.blocks
	es, err := cachedLoad(&c.mu, &c.m, maxCachedBlocks, nid, func() ([]storage.StateEntry, error) {
		return storage.StateBlockTx(tx, nid)
	})
	if err != nil {
		return nil, fmt.Errorf("state block %d: %w", nid, err)
	}
	return es, nil
}

// storeState stores state as a snapshot, reusing every block of base whose
// bucket did not change. It returns base itself when nothing changed.
func (rs *Roomserver) storeState(tx *storage.Tx, roomNID int64, base *snapshot, state stateMap) (*snapshot, error) {
	var buckets [numBlocks][]storage.StateEntry
	for k, ev := range state {
		b := bucketOf(k.typeNID, k.keyNID)
		buckets[b] = append(buckets[b], storage.StateEntry{TypeNID: k.typeNID, KeyNID: k.keyNID, EventNID: ev})
	}
	out := &snapshot{state: state}
	changed := base == nil
	for b := range buckets {
		es := buckets[b]
		slices.SortFunc(es, compareEntries)
		if base != nil {
			old, err := rs.bucketEntries(tx, base, b)
			if err != nil {
				return nil, err
			}
			if slices.Equal(old, es) {
				out.blocks[b] = base.blocks[b]
				continue
			}
		}
		changed = true
		if len(es) == 0 {
			continue
		}
		nid, err := storage.InsertStateBlock(tx, es)
		if err != nil {
			return nil, err
		}
		out.blocks[b] = nid
	}
	if !changed {
		return base, nil
	}
	nid, err := storage.InsertSnapshot(tx, roomNID, out.blocks[:])
	if err != nil {
		return nil, err
	}
	out.nid = nid
	return out, nil
}

func (rs *Roomserver) bucketEntries(tx *storage.Tx, s *snapshot, b int) ([]storage.StateEntry, error) {
	if s.blocks[b] == 0 {
		return nil, nil
	}
	return rs.blockEntries(tx, s.blocks[b])
}

func compareEntries(a, b storage.StateEntry) int {
	if a.TypeNID != b.TypeNID {
		return cmpInt(a.TypeNID, b.TypeNID)
	}
	return cmpInt(a.KeyNID, b.KeyNID)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
