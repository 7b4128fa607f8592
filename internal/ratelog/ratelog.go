// Package ratelog logs warnings at a bounded rate. Anyone on the radio path can trigger a
// refusal; logging each one would let attack traffic flood the drone's logs and disk, so
// each message is logged at most once per interval with a count of those it suppressed.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter logs each message at most once per interval. Safe for concurrent use.
type Limiter struct {
	logger   *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	dropped  map[string]int
}

// New returns a limiter logging to logger at most once per interval per message.
func New(logger *slog.Logger, interval time.Duration) *Limiter {
	return &Limiter{logger: logger, interval: interval, last: map[string]time.Time{}, dropped: map[string]int{}}
}

// Warn logs msg with args at Warn level unless msg was logged less than interval ago.
func (w *Limiter) Warn(msg string, args ...any) { w.log(slog.LevelWarn, msg, msg, args) }

// Info is Warn at Info level, for events an attacker can trigger at will (roaming).
func (w *Limiter) Info(msg string, args ...any) { w.log(slog.LevelInfo, msg, msg, args) }

// WarnFor is Warn limited per message and who: one authenticated party's refusals do not
// hide another's. who must come from a bounded set (user names), not from the network.
func (w *Limiter) WarnFor(who, msg string, args ...any) {
	w.log(slog.LevelWarn, msg+"\x00"+who, msg, args)
}

// Allow reports whether a message limited under key may be logged now. If so it returns
// how many messages under key were suppressed since the last one logged, and the caller
// logs the message itself, with that count; if not it counts one more suppressed message.
// It allocates nothing, so a receive path that must stay allocation-free for forged traffic
// builds its log arguments only when Allow says yes. key must come from a bounded set.
func (w *Limiter) Allow(key string) (suppressed int, ok bool) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if last, seen := w.last[key]; seen && now.Sub(last) < w.interval {
		w.dropped[key]++
		return 0, false
	}
	suppressed = w.dropped[key]
	w.last[key], w.dropped[key] = now, 0
	return suppressed, true
}

func (w *Limiter) log(level slog.Level, key, msg string, args []any) {
	suppressed, ok := w.Allow(key)
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	w.logger.Log(context.Background(), level, msg, args...)
}
