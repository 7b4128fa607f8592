package natstest

import (
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nkeys"
)

// ExampleUsers are the NATS users of the example server configuration,
// docs/relay/nats-server.conf: two drones and two operators.
var ExampleUsers = []string{"drone-7", "drone-8", "alice", "bob"}

// exampleListen is the example's listen line: StartEmbedded and StartCluster set their own.
const exampleListen = "\nlisten: 0.0.0.0:4222\n"

// ExampleConfig is the example server configuration at path (docs/relay/nats-server.conf),
// the one the README ships, with a fresh NKey in place of each user's placeholder
// ("DRONE_7_NKEY", ...) and without its listen line. seeds maps each of ExampleUsers to
// its seed. It fails if the file lacks the listen line or a placeholder, so the tests
// that run it keep testing the file as shipped.
func ExampleConfig(path string) (conf string, seeds map[string]string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	conf = string(data)
	if !strings.Contains(conf, exampleListen) {
		return "", nil, fmt.Errorf("natstest: %s has no line %q", path, strings.TrimSpace(exampleListen))
	}
	conf = strings.Replace(conf, exampleListen, "\n", 1)
	seeds = map[string]string{}
	for _, user := range ExampleUsers {
		placeholder := `"` + strings.ToUpper(strings.ReplaceAll(user, "-", "_")) + `_NKEY"`
		if !strings.Contains(conf, placeholder) {
			return "", nil, fmt.Errorf("natstest: %s has no placeholder %s", path, placeholder)
		}
		seed, pub, err := NewUserKey()
		if err != nil {
			return "", nil, err
		}
		conf = strings.ReplaceAll(conf, placeholder, `"`+pub+`"`)
		seeds[user] = seed
	}
	return conf, seeds, nil
}

// NewUserKey is a fresh NKey user's seed and public key.
func NewUserKey() (seed, pub string, err error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", "", err
	}
	defer kp.Wipe()
	s, err := kp.Seed()
	if err != nil {
		return "", "", err
	}
	if pub, err = kp.PublicKey(); err != nil {
		return "", "", err
	}
	return string(s), pub, nil
}
