package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// Creds are the NATS credentials of one drone or operator, read from the --relay-creds
// file: a small TOML file of mode 0600 holding exactly one of
//
//	user = "alice"              # a user name and password
//	password = "..."
//
//	token = "..."               # an authorization token
//
//	nkey_seed = "SUA..."        # an NKey user seed (nk -gen user)
//
// and, for an operator, optionally
//
//	name = "alice"              # the downlink subject's name token; default: user, or "anonymous"
//
// Credentials never appear in logs or errors: String and LogValue redact them.
type Creds struct {
	User     string `toml:"user"`
	Password string `toml:"password"`
	Token    string `toml:"token"`
	NkeySeed string `toml:"nkey_seed"`
	Name     string `toml:"name"`
}

// LoadCreds reads and checks a credentials file (see Creds). A file its group or others may
// access is refused, like a key or PSK file.
func LoadCreds(path string) (*Creds, error) {
	data, err := crypto.ReadSecretFile(path, "credentials")
	if err != nil {
		return nil, err
	}
	defer crypto.Wipe(data)
	c, err := ParseCreds(data)
	if err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	return c, nil
}

// ParseCreds parses the content of a credentials file. Its errors never quote a value.
func ParseCreds(data []byte) (*Creds, error) {
	var c Creds
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, fmt.Errorf("not valid TOML (line %d)", perr.Position.Line)
		}
		return nil, errors.New("not valid TOML, or a value of the wrong type (want strings)")
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("unknown key %s (known: user, password, token, nkey_seed, name)", strings.Join(keys, ", "))
	}
	methods := 0
	if c.User != "" || c.Password != "" {
		methods++
		if c.User == "" || c.Password == "" {
			return nil, errors.New("user and password go together")
		}
	}
	if c.Token != "" {
		methods++
	}
	if c.NkeySeed != "" {
		methods++
		kp, err := nkeys.FromSeed([]byte(c.NkeySeed))
		if err != nil {
			return nil, errors.New("nkey_seed is not an NKey seed")
		}
		if prefix, _, err := nkeys.DecodeSeed([]byte(c.NkeySeed)); err != nil || prefix != nkeys.PrefixByteUser {
			kp.Wipe()
			return nil, errors.New("nkey_seed is not an NKey user seed (it starts with SU)")
		}
		kp.Wipe()
	}
	if methods != 1 {
		return nil, errors.New("want exactly one of user and password, token, or nkey_seed")
	}
	if c.Name != "" {
		if err := CheckToken("name", c.Name); err != nil {
			return nil, err
		}
	}
	if c.User != "" {
		if err := CheckToken("user", c.User); err != nil {
			return nil, fmt.Errorf("%w (it is the downlink subject's name unless name is set)", err)
		}
	}
	return &c, nil
}

// OperatorName is the name token of the operator's downlink subjects: Name, else User,
// else "anonymous". A nil Creds (no credentials) is "anonymous".
func (c *Creds) OperatorName() string {
	switch {
	case c == nil:
		return "anonymous"
	case c.Name != "":
		return c.Name
	case c.User != "":
		return c.User
	}
	return "anonymous"
}

// Method names the kind of credentials, for logs: "user", "token", "nkey" or "none".
func (c *Creds) Method() string {
	if c == nil {
		return "none"
	}
	return c.method()
}

func (c Creds) method() string {
	switch {
	case c.User != "":
		return "user"
	case c.Token != "":
		return "token"
	case c.NkeySeed != "":
		return "nkey"
	}
	return "none"
}

// The methods below have value receivers so that a Creds prints without its secrets as a
// value too (copied into a struct, or passed to a log call), not only as a pointer; a nil
// *Creds prints as <nil>.

// String implements fmt.Stringer without any secret.
func (c Creds) String() string {
	if c.User != "" {
		return "NATS credentials (user " + c.User + ")"
	}
	return "NATS credentials (" + c.method() + ")"
}

// GoString keeps %#v from printing the secrets.
func (c Creds) GoString() string { return c.String() }

// Format prints String for every verb (%v, %+v, %s, %q, %x, ...).
func (c Creds) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// MarshalText keeps encoding/json and friends from writing the secrets.
func (c Creds) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// LogValue implements slog.LogValuer without any secret.
func (c Creds) LogValue() slog.Value { return slog.StringValue(c.String()) }

// options are the nats.go options that present the credentials.
func (c *Creds) options() ([]nats.Option, error) {
	switch {
	case c == nil:
		return nil, nil
	case c.User != "":
		return []nats.Option{nats.UserInfo(c.User, c.Password)}, nil
	case c.Token != "":
		return []nats.Option{nats.Token(c.Token)}, nil
	case c.NkeySeed != "":
		kp, err := nkeys.FromSeed([]byte(c.NkeySeed))
		if err != nil {
			return nil, errors.New("nkey_seed is not an NKey seed")
		}
		pub, err := kp.PublicKey()
		if err != nil {
			kp.Wipe()
			return nil, errors.New("nkey_seed is not an NKey seed")
		}
		// The key pair lives as long as the connection, which signs the server's nonce at
		// every reconnect.
		return []nats.Option{nats.Nkey(pub, kp.Sign)}, nil
	}
	return nil, nil
}
