package storage

import "sync"

// recentTxns holds the client transaction IDs of the events this process
// committed, by event NID. A sync that shows a device its own new events
// finds their transaction IDs here: the transactions table is keyed for
// the sends' idempotency checks, (device, room, transaction), so finding
// them by event means reading every transaction the device ever made in
// the room. Its events from before this process, or past the last
// maxRecentTxns, are still read from the table.
type recentTxns struct {
	mu sync.Mutex
	// Events in (floor, upto] are all known: one with a transaction is in
	// byNID, one without is not. upto is the newest event of the last
	// commit published; a reader may already see later ones.
	floor, upto int64
	byNID       map[int64]recentTxn
	order       []int64 // byNID's keys, oldest first
}

type recentTxn struct {
	device int64 // deviceHash
	txnID  string
}

// maxRecentTxns bounds the transactions recentTxns holds (~80 bytes
// each): a sync's own new events are among a device's last few.
const maxRecentTxns = 1024

// txnNote is a transaction a write stored, for recentTxns once committed.
type txnNote struct {
	eventNID int64
	recentTxn
}

// publish records a commit: its transactions, and the newest event it
// stored (0 if none). Commits are published in order.
func (c *recentTxns) publish(notes []txnNote, first, newest int64) {
	if newest == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byNID == nil {
		// Events before this process's first are not known here.
		c.byNID, c.floor = map[int64]recentTxn{}, first-1
	}
	for _, n := range notes {
		c.byNID[n.eventNID] = n.recentTxn
		c.order = append(c.order, n.eventNID)
	}
	c.upto = max(c.upto, newest)
	for len(c.order) > maxRecentTxns {
		c.floor = max(c.floor, c.order[0])
		delete(c.byNID, c.order[0])
		c.order = c.order[1:]
	}
}

// lookup returns the transaction IDs of a device's events among nids,
// and the events it cannot tell about.
func (c *recentTxns) lookup(device int64, nids []int64) (map[int64]string, []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var found map[int64]string
	var unknown []int64
	for _, nid := range nids {
		if nid <= c.floor || nid > c.upto {
			unknown = append(unknown, nid)
			continue
		}
		if t, ok := c.byNID[nid]; ok && t.device == device {
			if found == nil {
				found = map[int64]string{}
			}
			found[nid] = t.txnID
		}
	}
	return found, unknown
}
