package daemon

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// printable renders a command payload for one line of output: text stays as it is, while
// control characters, invalid UTF-8 and other non-printing runes are escaped, so an
// operator cannot forge extra output lines or send terminal escape sequences to whoever
// watches the daemon.
func printable(b []byte) string {
	var sb strings.Builder
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && size <= 1:
			sb.WriteString(`\x`)
			sb.WriteString(strconv.FormatUint(uint64(b[0])>>4, 16))
			sb.WriteString(strconv.FormatUint(uint64(b[0])&0xf, 16))
		case r == '\\':
			sb.WriteString(`\\`)
		case unicode.IsPrint(r):
			sb.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			sb.WriteString(q[1 : len(q)-1])
		}
		b = b[size:]
	}
	return sb.String()
}
