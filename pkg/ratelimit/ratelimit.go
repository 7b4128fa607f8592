// Package ratelimit is a keyed token-bucket rate limiter with a bounded table.
//
// The drone limits handshakes per source address and logins per source and per user, so a
// flood of authenticated-but-hostile requests cannot make it do unbounded RSA or argon2
// work. The table of buckets is bounded: when it is full and nothing in it has gone idle,
// new keys are refused (fail closed) rather than letting an attacker who varies the key
// grow memory without limit.
package ratelimit

import (
	"sync"
	"time"
)

// DefaultMaxKeys bounds the bucket table when Config.MaxKeys is zero.
const DefaultMaxKeys = 4096

// Config describes one limiter. Zero fields take the documented defaults.
type Config struct {
	// Rate is how many events per second a key may sustain. Must be positive.
	Rate float64
	// Burst is how many events a key may spend at once. If zero, defaults to 1.
	Burst int
	// MaxKeys bounds the number of keys tracked. If zero, defaults to DefaultMaxKeys.
	MaxKeys int
}

// Limiter is a set of token buckets, one per key. It is safe for concurrent use.
type Limiter[K comparable] struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	maxKeys int
	buckets map[K]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New builds a limiter; it reports false when cfg.Rate is not positive.
func New[K comparable](cfg Config) (*Limiter[K], bool) {
	if !(cfg.Rate > 0) || cfg.Burst < 0 || cfg.MaxKeys < 0 {
		return nil, false
	}
	if cfg.Burst == 0 {
		cfg.Burst = 1
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	return &Limiter[K]{rate: cfg.Rate, burst: float64(cfg.Burst), maxKeys: cfg.MaxKeys, buckets: make(map[K]*bucket)}, true
}

// Allow spends one token of key's bucket at time now and reports whether there was one.
func (l *Limiter[K]) Allow(key K, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.sweepLocked(now)
			if len(l.buckets) >= l.maxKeys {
				return false
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Sweep forgets every key whose bucket has refilled completely: it would allow a full burst
// anyway, so remembering it changes nothing.
func (l *Limiter[K]) Sweep(now time.Time) {
	l.mu.Lock()
	l.sweepLocked(now)
	l.mu.Unlock()
}

func (l *Limiter[K]) sweepLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// Len is the number of keys tracked.
func (l *Limiter[K]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
