package relay

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestProtocolDocumentsTheRelay: docs/PROTOCOL.md section 12 gives every constant of the
// relay with the value the code has.
func TestProtocolDocumentsTheRelay(t *testing.T) {
	data, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, c := range []struct {
		text string
		ok   bool
	}{
		{fmt.Sprintf("`MaxTokenLength = %d`", MaxTokenLength), true},
		{fmt.Sprintf("`maxSubjectLength = %d`", maxSubjectLength), true},
		{fmt.Sprintf("`DefaultMaxPeers = %d`", DefaultMaxPeers), true},
		{"`PeerKeepTime`", PeerKeepTime == 60*time.Second},
		{fmt.Sprintf("`WriteQueue = %d`", WriteQueue), true},
		{"`MaxControlLine = 64 KiB`", MaxControlLine == 64<<10},
		{"`MaxMessageSize = 1 MiB`", MaxMessageSize == 1<<20},
		{"`DefaultReconnectWait = 250ms`", DefaultReconnectWait == 250*time.Millisecond},
		{"`DefaultPingInterval = 5s`", DefaultPingInterval == 5*time.Second},
		{fmt.Sprintf("`MaxPingsOutstanding = %d`", MaxPingsOutstanding), true},
		{"`ReconnectBufferSize = 256 KiB`", ReconnectBufferSize == 256<<10},
		{fmt.Sprintf("`PendingMessages = %d`", PendingMessages), true},
		{"`PendingBytes = 8 MiB`", PendingBytes == 8<<20},
		{fmt.Sprintf("`DroneAddr =\n%s`", DroneAddr), true},
		{"`" + UplinkSubject("<ID>") + "`", true},
		{"`" + DownlinkSubject("<ID>", "<NAME>", "<NONCE>") + "`", true},
	} {
		if !strings.Contains(doc, c.text) || !c.ok {
			t.Errorf("PROTOCOL.md does not say %q, or the code has another value", c.text)
		}
	}
}
