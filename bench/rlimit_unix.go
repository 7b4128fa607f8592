//go:build unix

package main

import "syscall"

// raiseFileLimit makes the soft limit on open files at least want (at most the hard
// limit) and sets it with setrlimit even if it already is: the Go runtime raises the soft
// limit to the hard one at start but gives child processes the original, unless the
// program sets the limit itself. So the nats-server nodes inherit it. It returns the
// limit in force now.
func raiseFileLimit(want uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	l.Cur = max(l.Cur, min(want, l.Max))
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}
