//go:build !unix

package main

import "time"

// processCPU is not available here: handshake rates are then reported per wall second only.
func processCPU() (time.Duration, bool) { return 0, false }
