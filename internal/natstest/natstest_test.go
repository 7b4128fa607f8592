package natstest

import (
	"os"
	"testing"
)

// TestBuildServerAfterRemoval: a second BuildServer, after the directory of the first was
// removed (a test's t.TempDir() is, when the test ends), returns a binary that exists.
func TestBuildServerAfterRemoval(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	first, err := os.MkdirTemp("", "natstest-")
	if err != nil {
		t.Fatal(err)
	}
	_, err = BuildServer(first)
	os.RemoveAll(first)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := BuildServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("BuildServer returned %s, which does not exist: %v", bin, err)
	}
}
