package buildinfo

import (
	"strings"
	"testing"
)

// A stamped version replaces the module version; without one the module version shows.
func TestStamp(t *testing.T) {
	if Stamp != "" {
		t.Fatalf("Stamp is %q in a test binary, want empty", Stamp)
	}
	plain := Version()
	if strings.Contains(plain, "v9.8.7-stamped") {
		t.Fatalf("unstamped Version() = %q", plain)
	}
	Stamp = "v9.8.7-stamped"
	defer func() { Stamp = "" }()
	if got := Version(); !strings.HasPrefix(got, "v9.8.7-stamped") {
		t.Fatalf("stamped Version() = %q, want it to start with the stamp", got)
	}
}
