package e2e

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/userdb"
)

// Killing user edits with SIGKILL at random moments, many times over, never leaves a
// corrupt, truncated or half-written user database: every time it loads, and it is either
// the state before the edit or the state after it.
func TestCrashSafeUserDatabase(t *testing.T) {
	f := newFleet(t)
	db := f.path("users")
	var wg sync.WaitGroup
	for k := range 4 {
		wg.Go(func() { mustRun(t, "keygen", "--out", f.path(fmt.Sprintf("crash%d.key", k)), "--bits", "2048") })
	}
	wg.Wait()
	state := func() []string {
		d, err := userdb.Load(db)
		if err != nil {
			t.Fatalf("user database after a kill: %v", err)
		}
		var out []string
		for _, u := range d.Users() {
			out = append(out, u.Name+"/"+u.Role.String())
		}
		return out
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	rounds, killed := 45, 0
	for i := range rounds {
		before := state()
		user := fmt.Sprintf("crash%d", (i/3)%4)
		var args []string
		var after func([]string) bool
		switch i % 3 {
		case 0: // add
			args = []string{"user", "add", "--db", db, "--name", user, "--role", "observer",
				"--pubkey", f.path(user + ".key.pub"), "--password-file", f.path("alice.pw")}
			added := slices.Sorted(slices.Values(append(slices.Clone(before), user+"/observer")))
			after = func(s []string) bool { return slices.Equal(s, before) || slices.Equal(s, added) }
		case 1: // change a role
			args = []string{"user", "role", "--db", db, "--name", "bob", "--role", []string{"pilot", "observer"}[i%2]}
			after = func(s []string) bool { return len(s) == len(before) }
		case 2: // delete
			args = []string{"user", "del", "--db", db, "--name", user}
			removed := slices.DeleteFunc(slices.Clone(before), func(s string) bool { return s == user+"/observer" })
			after = func(s []string) bool { return slices.Equal(s, before) || slices.Equal(s, removed) }
		}
		cmd := exec.Command(filepath.Join(binDir, "dronelink"), args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			killed++
		}
		if s := state(); !after(s) {
			t.Fatalf("round %d (%v): %v -> %v", i, args[:2], before, s)
		}
	}
	if killed < rounds/4 {
		t.Fatalf("only %d of %d edits were killed before they finished: the test proves too little", killed, rounds)
	}

	// The daemon only reads the database: killing it while it reloads leaves it intact too.
	for range 3 {
		d := startDrone(t, f)
		mustRun(t, "user", "passwd", "--db", db, "--name", "olga", "--password-file", f.path("alice.pw"))
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
		state()
	}
	leftovers, _ := filepath.Glob(filepath.Join(f.dir, ".users.tmp-*"))
	t.Logf("%d edits, %d killed mid-way; the database loaded every time (%d temporary files left behind, never read)",
		rounds, killed, len(leftovers))
}
