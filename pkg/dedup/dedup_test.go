package dedup

import (
	"math/rand/v2"
	"testing"
	"time"
)

const lifetime = time.Minute

// TestDedupAgainstModel drives the cache with random commands, completions, aborts and
// clock steps and compares every answer with a plain map model.
func TestDedupAgainstModel(t *testing.T) {
	const capacity = 16
	c := NewCache(capacity, lifetime)
	type entry struct {
		added  time.Time
		done   bool
		status uint8
	}
	model := map[uint64]*entry{}
	var order []uint64
	now := time.Unix(0, 0)
	rng := rand.New(rand.NewPCG(3, 4))
	expire := func() {
		for len(order) > 0 {
			e, ok := model[order[0]]
			if ok && (now.Sub(e.added) < lifetime || !e.done) {
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
			state, status, _ := c.Begin(id, now)
			var want State
			if e, ok := model[id]; ok {
				want = Running
				if e.done {
					want = Done
					if status != e.status {
						t.Fatalf("op %d: status %v, want %v", i, status, e.status)
					}
				}
			} else {
				expire()
				if len(order) == capacity {
					want = Full
				} else {
					want = New
					model[id] = &entry{added: now}
					order = append(order, id)
				}
			}
			if state != want {
				t.Fatalf("op %d: begin(%d) = %v, want %v", i, id, state, want)
			}
		case op < 8:
			st := uint8(rng.IntN(2))
			c.Finish(id, st, []byte{byte(st)})
			if e, ok := model[id]; ok {
				e.done, e.status = true, st
			}
		case op < 9:
			c.Abort(id)
			if e, ok := model[id]; ok && !e.done {
				delete(model, id)
				if order[len(order)-1] == id {
					order = order[:len(order)-1]
				}
			}
		default:
			now = now.Add(time.Duration(rng.IntN(20)) * time.Second)
		}
		if c.Len() != len(model) {
			t.Fatalf("op %d: %d entries, model %d", i, c.Len(), len(model))
		}
	}
}

func TestDedupNeverForgetsALiveCommand(t *testing.T) {
	c := NewCache(2, lifetime)
	now := time.Unix(0, 0)
	for _, id := range []uint64{1, 2} {
		if s, _, _ := c.Begin(id, now); s != New {
			t.Fatal(s)
		}
		c.Finish(id, 0, []byte("ok"))
	}
	// Full of live entries: a third command is refused rather than evicting 1 or 2.
	if s, _, _ := c.Begin(3, now.Add(lifetime-time.Second)); s != Full {
		t.Fatalf("full cache: %v", s)
	}
	if s, st, p := c.Begin(1, now.Add(lifetime-time.Second)); s != Done || st != 0 || string(p) != "ok" {
		t.Fatalf("retransmission of 1: %v %v %q", s, st, p)
	}
	// Once they are older than any retransmission can be, room is made.
	if s, _, _ := c.Begin(3, now.Add(lifetime)); s != New {
		t.Fatalf("after the lifetime: %v", s)
	}
}
