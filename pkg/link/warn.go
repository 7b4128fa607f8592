package link

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// warnLimiter logs a warning at most once per interval per message, with a count of how
// many were suppressed, so attack traffic cannot flood the logs.
type warnLimiter struct {
	logger   *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	dropped  map[string]int
}

func newWarnLimiter(logger *slog.Logger, interval time.Duration) *warnLimiter {
	return &warnLimiter{logger: logger, interval: interval, last: map[string]time.Time{}, dropped: map[string]int{}}
}

// Warn logs msg with args at Warn level unless msg was logged less than interval ago.
func (w *warnLimiter) Warn(msg string, args ...any) { w.log(slog.LevelWarn, msg, args) }

// Info is Warn at Info level, for events an attacker can trigger at will (roaming).
func (w *warnLimiter) Info(msg string, args ...any) { w.log(slog.LevelInfo, msg, args) }

func (w *warnLimiter) log(level slog.Level, msg string, args []any) {
	now := time.Now()
	w.mu.Lock()
	if now.Sub(w.last[msg]) < w.interval {
		w.dropped[msg]++
		w.mu.Unlock()
		return
	}
	suppressed := w.dropped[msg]
	w.last[msg], w.dropped[msg] = now, 0
	w.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	w.logger.Log(context.Background(), level, msg, args...)
}
