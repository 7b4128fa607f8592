package app

import (
	"os/exec"
	"strings"
	"testing"
)

// The application layer depends on no transport: not on pion/dtls, and not on either
// secure channel of this module (they depend on it). Checked on the package's whole
// dependency graph, as the go tool resolves it.
func TestImportsNoTransport(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "pion") || strings.HasSuffix(dep, "/pkg/link") || strings.HasSuffix(dep, "/pkg/dtlslink") {
			t.Errorf("pkg/app depends on %s", dep)
		}
	}
}
