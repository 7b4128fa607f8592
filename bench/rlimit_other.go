//go:build !unix

package main

import "errors"

// raiseFileLimit is not available here.
func raiseFileLimit(uint64) (uint64, error) {
	return 0, errors.New("cannot read or raise the open files limit on this system")
}
