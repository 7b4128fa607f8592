package operator

import (
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// render shows a payload (an acknowledgement's or telemetry) on one line: as text when it
// is UTF-8 and mostly printable, with control and other non-printing characters escaped
// (\n, \t, \x00, \u202e) so a payload can neither break the line nor play tricks on the
// terminal; otherwise as "hex:" and its bytes in hex.
func render(payload []byte) string {
	if !utf8.Valid(payload) {
		return "hex:" + hex.EncodeToString(payload)
	}
	var b strings.Builder
	runes, escaped := 0, 0
	for _, r := range string(payload) {
		runes++
		if unicode.IsPrint(r) {
			b.WriteRune(r)
			continue
		}
		escaped++
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r < 0x10000:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	// Binary data that happens to be valid UTF-8 (zeros, small integers) reads better as hex.
	if escaped*4 > runes {
		return "hex:" + hex.EncodeToString(payload)
	}
	return b.String()
}
