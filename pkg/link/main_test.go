package link

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every server, client
// and fake network a test starts must stop when the test ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
