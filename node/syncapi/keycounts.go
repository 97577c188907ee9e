package syncapi

import (
	"slices"
	"sync"
	"time"
)

// Every /sync answer carries the device's one-time key counts, and
// counting a device's ~50 keys costs more than the rest of an empty
// incremental sync. The counts are cached per device for keyCountTTL and
// dropped at once when the client API says the device's keys changed
// (upload, local claim). A claim by another server is not reported: the
// device learns of it at most keyCountTTL later, on a sync that it would
// not have been woken for anyway.
const keyCountTTL = time.Second

type keyCountCache struct {
	mu    sync.Mutex
	seq   uint64 // invalidations so far
	floor uint64 // every key counts as invalidated at floor
	m     map[string]keyCount
	inval map[string]uint64 // device → seq of its last invalidation
}

type keyCount struct {
	otks     map[string]int
	fallback []string
	at       time.Time
}

const maxKeyCountCache = 100000

func newKeyCountCache() *keyCountCache {
	return &keyCountCache{m: map[string]keyCount{}, inval: map[string]uint64{}}
}

// begin is called before a read's snapshot starts: counts it reads may
// be cached only if no invalidation came after.
func (c *keyCountCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

func (c *keyCountCache) get(k string, now time.Time) (keyCount, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kc, ok := c.m[k]
	return kc, ok && now.Sub(kc.at) < keyCountTTL
}

func (c *keyCountCache) put(k string, kc keyCount, began uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inval[k] > began || c.floor > began {
		return
	}
	if len(c.m) >= maxKeyCountCache {
		clear(c.m)
	}
	c.m[k] = kc
}

func (c *keyCountCache) invalidate(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	delete(c.m, k)
	if len(c.inval) >= maxKeyCountCache {
		clear(c.inval)
		c.floor = c.seq
	}
	c.inval[k] = c.seq
}

// OneTimeKeysChanged says a device's one-time or fallback keys changed
// (uploaded or claimed here), so its next sync counts them afresh.
func (s *Syncer) OneTimeKeysChanged(userID, deviceID string) {
	s.keyCounts.invalidate(userID + "|" + deviceID)
}

// keyCounts adds the device's unused one-time key counts and fallback
// key algorithms; E2EE clients upload keys when these run low, so every
// response carries them.
func (rd *reader) keyCounts(res *syncResponse) error {
	k := rd.user + "|" + rd.deviceID
	now := time.Now()
	kc, ok := rd.s.keyCounts.get(k, now)
	if !ok {
		otks, fallback, err := rd.snap.KeyCounts(rd.user, rd.deviceID)
		if err != nil {
			return err
		}
		slices.Sort(fallback)
		kc = keyCount{otks: otks, fallback: fallback, at: now}
		rd.s.keyCounts.put(k, kc, rd.keysBegan)
	}
	res.OneTimeKeyCounts = kc.otks
	if kc.fallback != nil {
		res.FallbackKeyTypes = kc.fallback
	}
	return nil
}
