package relay

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// SubjectRoot is the first token of every subject the relay uses.
const SubjectRoot = "dronelink"

// MaxTokenLength bounds a drone id and an operator's name.
const MaxTokenLength = 64

// maxSubjectLength bounds a downlink subject the drone accepts as a reply subject:
// root, id, "down", name and a nonce, with room to spare.
const maxSubjectLength = len(SubjectRoot) + 1 + MaxTokenLength + len(".down.") + MaxTokenLength + 1 + MaxTokenLength

// UplinkSubject is the subject operators send the drone's datagrams on.
func UplinkSubject(droneID string) string { return SubjectRoot + "." + droneID + ".up" }

// DownlinkPrefix is the start of every subject the drone answers on, up to and including
// the dot before the operator's name.
func DownlinkPrefix(droneID string) string { return SubjectRoot + "." + droneID + ".down." }

// DownlinkSubject is the subject one operator process hears the drone on.
func DownlinkSubject(droneID, name, nonce string) string {
	return DownlinkPrefix(droneID) + name + "." + nonce
}

// CheckToken checks a drone id or an operator's name: 1 to MaxTokenLength letters, digits,
// '-' or '_', so it is one NATS subject token and cannot hold a wildcard or a dot. what
// names it in the error ("drone id").
func CheckToken(what, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	if len(s) > MaxTokenLength {
		return fmt.Errorf("%s %.20q... is longer than %d characters", what, s, MaxTokenLength)
	}
	if !validToken(s) {
		return fmt.Errorf("%s %q may hold only letters, digits, '-' and '_'", what, s)
	}
	return nil
}

// validToken is CheckToken without the message, for the drone's per-datagram check.
func validToken(s string) bool {
	if s == "" || len(s) > MaxTokenLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validDownlink reports whether reply is prefix + name + "." + nonce with two valid tokens.
func validDownlink(reply, prefix string) bool {
	if len(reply) > maxSubjectLength || !strings.HasPrefix(reply, prefix) {
		return false
	}
	name, nonce, ok := strings.Cut(reply[len(prefix):], ".")
	return ok && validToken(name) && validToken(nonce)
}

// ParseURLs splits a --relay value, a comma-separated list of NATS server URLs, and checks
// each: scheme nats or tls, a host, and no credentials (they belong in the credentials
// file, not on a command line that every local user can read in the process list). Its
// errors show a URL only through RedactURLs.
func ParseURLs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("no NATS server URL")
	}
	var urls []string
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		if strings.Contains(raw, "@") { // user, password or token (nats://TOKEN@HOST), parsable or not
			return nil, fmt.Errorf("%q holds credentials: put them in the --relay-creds file instead", RedactURLs(raw))
		}
		u, err := url.Parse(raw)
		if err != nil || raw == "" {
			return nil, fmt.Errorf("%q is not a URL (want nats://HOST:PORT)", RedactURLs(raw))
		}
		if u.Scheme != "nats" && u.Scheme != "tls" {
			return nil, fmt.Errorf("%q: the scheme must be nats:// or tls://", RedactURLs(raw))
		}
		if u.User != nil {
			return nil, fmt.Errorf("%q holds credentials: put them in the --relay-creds file instead", RedactURLs(raw))
		}
		if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("%q: want nats://HOST:PORT", RedactURLs(raw))
		}
		urls = append(urls, u.String())
	}
	return urls, nil
}

// RedactURLs is s, a comma-separated list of URLs as a user wrote it, with whatever comes
// before the last '@' of each URL (after its "scheme://" or "scheme:") replaced by
// REDACTED, for messages: unlike url.URL.Redacted it also hides a user name (a NATS token
// is written nats://TOKEN@HOST) and works on text url.Parse cannot read or reads without a
// user part ("alice:pw@relay:4222").
func RedactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		at := strings.LastIndex(p, "@")
		if at < 0 {
			continue
		}
		start := 0
		if j := strings.Index(p, "://"); j >= 0 && j < at {
			start = j + len("://")
		} else {
			trimmed := strings.TrimLeft(p, " ")
			for _, scheme := range []string{"nats:", "tls:", "ws:", "wss:"} {
				if len(trimmed) >= len(scheme) && strings.EqualFold(trimmed[:len(scheme)], scheme) {
					start = len(p) - len(trimmed) + len(scheme)
					break
				}
			}
		}
		parts[i] = p[:start] + "REDACTED" + p[at:]
	}
	return strings.Join(parts, ",")
}
