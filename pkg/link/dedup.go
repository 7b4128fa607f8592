package link

import (
	"sync"
	"time"
)

// dedupCache remembers the command ids one operator key had executed, with their
// acknowledgements, so a retransmitted command is acknowledged again but never executed
// again. Entries live for DedupLifetime, longer than an operator retransmits any command
// (MaxCommandLifetime), and the cache is bounded: when it is full of live entries a new
// command is refused as busy rather than evicting an id that could still be retransmitted.
// Safe for concurrent use.
type dedupCache struct {
	mu       sync.Mutex
	capacity int
	entries  map[uint64]*dedupEntry
	order    []uint64 // ids in insertion order, oldest first (a FIFO ring)
	head     int      // index of the oldest id in order
	count    int      // ids in order
}

type dedupEntry struct {
	added   time.Time
	done    bool
	status  AckStatus
	payload []byte
}

type dedupState int

const (
	dedupNew     dedupState = iota // not seen: execute it
	dedupRunning                   // being executed now: do nothing
	dedupDone                      // executed: resend the stored ack
	dedupFull                      // no room: refuse as busy
)

func newDedupCache(capacity int) *dedupCache {
	return &dedupCache{capacity: capacity, entries: make(map[uint64]*dedupEntry, capacity), order: make([]uint64, capacity)}
}

// begin looks id up and, if it is new and there is room, records it as running.
func (c *dedupCache) begin(id uint64, now time.Time) (dedupState, AckStatus, []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[id]; ok {
		if !e.done {
			return dedupRunning, 0, nil
		}
		return dedupDone, e.status, e.payload
	}
	c.expireLocked(now)
	if c.count == c.capacity {
		return dedupFull, 0, nil
	}
	c.entries[id] = &dedupEntry{added: now}
	c.order[(c.head+c.count)%c.capacity] = id
	c.count++
	return dedupNew, 0, nil
}

// finish stores the acknowledgement of an executed command.
func (c *dedupCache) finish(id uint64, status AckStatus, payload []byte) {
	c.mu.Lock()
	if e, ok := c.entries[id]; ok {
		e.done, e.status, e.payload = true, status, append([]byte(nil), payload...)
	}
	c.mu.Unlock()
}

// abort forgets a command that was recorded but never executed (the queue was full), so a
// retransmission can run it. It is called right after begin, so the id is normally the
// newest in order and its slot is freed at once; otherwise the slot ages out and lookups
// skip ids no longer present.
func (c *dedupCache) abort(id uint64) {
	c.mu.Lock()
	if e, ok := c.entries[id]; ok && !e.done {
		delete(c.entries, id)
		if last := (c.head + c.count - 1) % c.capacity; c.count > 0 && c.order[last] == id {
			c.count--
		}
	}
	c.mu.Unlock()
}

// expire drops entries older than DedupLifetime.
func (c *dedupCache) expire(now time.Time) {
	c.mu.Lock()
	c.expireLocked(now)
	c.mu.Unlock()
}

func (c *dedupCache) expireLocked(now time.Time) {
	for c.count > 0 {
		id := c.order[c.head]
		e, ok := c.entries[id]
		if ok && (now.Sub(e.added) < DedupLifetime || !e.done) {
			return
		}
		if ok {
			delete(c.entries, id)
		}
		c.head = (c.head + 1) % c.capacity
		c.count--
	}
}

// len is the number of remembered ids.
func (c *dedupCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
