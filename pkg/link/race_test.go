//go:build race

package link

// raceEnabled: under the race detector sync.Pool drops items at random, so pooled paths
// allocate; their allocation tests run without it (make test runs them so too).
const raceEnabled = true
