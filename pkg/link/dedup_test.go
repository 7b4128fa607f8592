package link

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestDedupAgainstModel drives the cache with random commands, completions, aborts and
// clock steps and compares every answer with a plain map model.
func TestDedupAgainstModel(t *testing.T) {
	const capacity = 16
	c := newDedupCache(capacity)
	type entry struct {
		added  time.Time
		done   bool
		status AckStatus
	}
	model := map[uint64]*entry{}
	var order []uint64
	now := time.Unix(0, 0)
	rng := rand.New(rand.NewPCG(3, 4))
	expire := func() {
		for len(order) > 0 {
			e, ok := model[order[0]]
			if ok && (now.Sub(e.added) < DedupLifetime || !e.done) {
				return
			}
			if ok {
				delete(model, order[0])
			}
			order = order[1:]
		}
	}
	for i := range 200_000 {
		id := uint64(rng.IntN(40))
		switch op := rng.IntN(10); {
		case op < 5:
			state, status, _ := c.begin(id, now)
			var want dedupState
			if e, ok := model[id]; ok {
				want = dedupRunning
				if e.done {
					want = dedupDone
					if status != e.status {
						t.Fatalf("op %d: status %v, want %v", i, status, e.status)
					}
				}
			} else {
				expire()
				if len(order) == capacity {
					want = dedupFull
				} else {
					want = dedupNew
					model[id] = &entry{added: now}
					order = append(order, id)
				}
			}
			if state != want {
				t.Fatalf("op %d: begin(%d) = %v, want %v", i, id, state, want)
			}
		case op < 8:
			st := AckStatus(rng.IntN(2))
			c.finish(id, st, []byte{byte(st)})
			if e, ok := model[id]; ok {
				e.done, e.status = true, st
			}
		case op < 9:
			c.abort(id)
			if e, ok := model[id]; ok && !e.done {
				delete(model, id)
				if order[len(order)-1] == id {
					order = order[:len(order)-1]
				}
			}
		default:
			now = now.Add(time.Duration(rng.IntN(20)) * time.Second)
		}
		if c.len() != len(model) {
			t.Fatalf("op %d: %d entries, model %d", i, c.len(), len(model))
		}
	}
}

func TestDedupNeverForgetsALiveCommand(t *testing.T) {
	c := newDedupCache(2)
	now := time.Unix(0, 0)
	for _, id := range []uint64{1, 2} {
		if s, _, _ := c.begin(id, now); s != dedupNew {
			t.Fatal(s)
		}
		c.finish(id, AckOK, []byte("ok"))
	}
	// Full of live entries: a third command is refused rather than evicting 1 or 2.
	if s, _, _ := c.begin(3, now.Add(DedupLifetime-time.Second)); s != dedupFull {
		t.Fatalf("full cache: %v", s)
	}
	if s, st, p := c.begin(1, now.Add(DedupLifetime-time.Second)); s != dedupDone || st != AckOK || string(p) != "ok" {
		t.Fatalf("retransmission of 1: %v %v %q", s, st, p)
	}
	// Once they are older than any retransmission can be, room is made.
	if s, _, _ := c.begin(3, now.Add(DedupLifetime)); s != dedupNew {
		t.Fatalf("after the lifetime: %v", s)
	}
}
