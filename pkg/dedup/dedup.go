// Package dedup remembers which command ids were executed, with their acknowledgements, so
// a retransmitted command is acknowledged again but never executed again: at-most-once
// execution over a link that loses and duplicates datagrams.
//
// Entries live for a fixed lifetime, chosen longer than any sender retransmits one command,
// and the cache is bounded: when it is full of live entries a new command is refused
// (Full) rather than evicting an id that could still be retransmitted. Fail closed: the
// sender retries later; nothing runs twice.
package dedup

import (
	"sync"
	"time"
)

// State is what Begin found.
type State int

// Begin results.
const (
	New     State = iota // not seen: execute it (it is now recorded as running)
	Running              // being executed now: do nothing
	Done                 // executed: resend the stored acknowledgement
	Full                 // no room: refuse as busy, record nothing
)

// Cache is the executed-id memory of one sender. Safe for concurrent use.
type Cache struct {
	mu       sync.Mutex
	capacity int
	lifetime time.Duration
	entries  map[uint64]*entry
	order    []uint64 // ids in insertion order, oldest first (a FIFO ring)
	head     int      // index of the oldest id in order
	count    int      // ids in order
}

type entry struct {
	added   time.Time
	done    bool
	status  uint8
	payload []byte
}

// NewCache makes a cache of capacity ids (at least 1) whose executed entries live for lifetime.
func NewCache(capacity int, lifetime time.Duration) *Cache {
	capacity = max(capacity, 1)
	return &Cache{capacity: capacity, lifetime: lifetime, entries: make(map[uint64]*entry, capacity), order: make([]uint64, capacity)}
}

// Begin looks id up and, if it is new and there is room, records it as running. For Done
// it returns the stored status and payload (which the caller must not modify).
func (c *Cache) Begin(id uint64, now time.Time) (State, uint8, []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[id]; ok {
		if !e.done {
			return Running, 0, nil
		}
		return Done, e.status, e.payload
	}
	c.expireLocked(now)
	if c.count == c.capacity {
		return Full, 0, nil
	}
	c.entries[id] = &entry{added: now}
	c.order[(c.head+c.count)%c.capacity] = id
	c.count++
	return New, 0, nil
}

// Finish stores the acknowledgement of an executed command (the payload is copied).
func (c *Cache) Finish(id uint64, status uint8, payload []byte) {
	c.mu.Lock()
	if e, ok := c.entries[id]; ok {
		e.done, e.status, e.payload = true, status, append([]byte(nil), payload...)
	}
	c.mu.Unlock()
}

// Abort forgets a command that was recorded but never executed (the queue was full), so a
// retransmission can run it. It is called right after Begin, so the id is normally the
// newest in order and its slot is freed at once; otherwise the slot ages out and lookups
// skip ids no longer present.
func (c *Cache) Abort(id uint64) {
	c.mu.Lock()
	if e, ok := c.entries[id]; ok && !e.done {
		delete(c.entries, id)
		if last := (c.head + c.count - 1) % c.capacity; c.count > 0 && c.order[last] == id {
			c.count--
		}
	}
	c.mu.Unlock()
}

// Expire drops executed entries older than the lifetime.
func (c *Cache) Expire(now time.Time) {
	c.mu.Lock()
	c.expireLocked(now)
	c.mu.Unlock()
}

func (c *Cache) expireLocked(now time.Time) {
	for c.count > 0 {
		id := c.order[c.head]
		e, ok := c.entries[id]
		if ok && (now.Sub(e.added) < c.lifetime || !e.done) {
			return
		}
		if ok {
			delete(c.entries, id)
		}
		c.head = (c.head + 1) % c.capacity
		c.count--
	}
}

// Len is the number of remembered ids.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
