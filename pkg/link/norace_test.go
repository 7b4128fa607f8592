//go:build !race

package link

// raceEnabled: see race_test.go.
const raceEnabled = false
