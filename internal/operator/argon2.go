package operator

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/pkg/userdb"
)

// argon2Flags set the cost of a new password hash (user add, user passwd). The cost is
// stored in the hash (PHC string), so the drone verifies each hash with its own cost: a
// changed default never locks anyone out.
type argon2Flags struct {
	memoryMiB, time, threads uint
	cmd                      *cobra.Command
}

func (f *argon2Flags) register(cmd *cobra.Command) {
	d := userdb.DefaultParams
	f.cmd = cmd
	cmd.Flags().UintVar(&f.memoryMiB, "argon2-memory", uint(d.MemoryKiB/1024),
		"argon2id memory per password check in `MiB` (m): the drone needs this much for each login it checks at once (dronelinkd --login-workers); at least 46 with --argon2-time 1, at least 19 with 2 or more")
	cmd.Flags().UintVar(&f.time, "argon2-time", uint(d.Time), "argon2id passes over the memory (t), `N` from 1 to 16: more passes, more time per login")
	cmd.Flags().UintVar(&f.threads, "argon2-threads", uint(d.Threads), "argon2id lanes (p), `N` from 1 to 16: how many cores one password check may use")
}

// params are the parameters of a new hash: base (the app's: userdb.DefaultParams outside
// tests) when no --argon2-* flag is given, else the three flags (each defaulting to
// userdb.DefaultParams), which must meet userdb's floors (Params.CheckCost).
func (f *argon2Flags) params(base userdb.Params) (userdb.Params, error) {
	fl := f.cmd.Flags()
	if !fl.Changed("argon2-memory") && !fl.Changed("argon2-time") && !fl.Changed("argon2-threads") {
		return base, nil
	}
	weak := usagef("--argon2-memory %d with --argon2-time %d is too weak: want at least %d MiB with one pass, or at least %d MiB with --argon2-time 2 or more",
		f.memoryMiB, f.time, userdb.MinMemoryKiBOnePass/1024, userdb.MinMemoryKiB/1024)
	switch {
	case f.memoryMiB > userdb.MaxMemoryKiB/1024:
		return base, usagef("--argon2-memory %d: want at most %d (MiB)", f.memoryMiB, userdb.MaxMemoryKiB/1024)
	case f.time < 1 || f.time > userdb.MaxTime:
		return base, usagef("--argon2-time %d: want 1 to %d", f.time, userdb.MaxTime)
	case f.threads < 1 || f.threads > userdb.MaxThreads:
		return base, usagef("--argon2-threads %d: want 1 to %d", f.threads, userdb.MaxThreads)
	case f.memoryMiB == 0:
		return base, weak
	}
	p := base
	p.MemoryKiB, p.Time, p.Threads = uint32(f.memoryMiB*1024), uint32(f.time), uint8(f.threads)
	if err := p.CheckCost(); err != nil {
		if errors.Is(err, userdb.ErrWeakParams) {
			return base, weak
		}
		return base, usagef("%v", err)
	}
	return p, nil
}

// argon2Help explains the cost flags in the help of user add and user passwd.
const argon2Help = `The password hash's cost is stored in the hash, and the drone checks each password
with its own hash's cost. The default, 64 MiB and one pass with 2 lanes, takes 64 MiB of
the drone's memory for each login it checks at once (dronelinkd --login-workers, 1 by
default). On a computer short of memory, trade memory for passes: --argon2-memory 19
--argon2-time 2 takes 19 MiB. Floors (OWASP): at least 46 MiB with one pass, at least
19 MiB with two or more.`
