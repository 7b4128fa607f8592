package operator

import (
	"context"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/relay"
)

// fingerprintFormsHelp explains the two fingerprint forms, in the --help texts of pin and
// fingerprint.
const fingerprintFormsHelp = `A fingerprint comes in two forms, both from one SHA-256 hash over the key's PKIX
(SubjectPublicKeyInfo) DER encoding, the bytes inside the .pub file's PEM block:

  SHA256:<43 characters>   the unpadded base64 of the whole hash, in the style of
                           ssh-keygen -l (case-sensitive)
  12345 06789 ... (10)     the readable form: the first 20 bytes of the same hash as
                           10 groups of 5 digits, each group one big-endian 16-bit
                           number (00000 to 65535), to read aloud and compare group
                           by group; making another key with the same 160 bits takes
                           about 2^160 attempts

Neither equals what ssh-keygen -l prints for the same key: ssh-keygen hashes the key's
SSH wire encoding, dronelink its PKIX encoding.`

func (a *app) newPinCmd() *cobra.Command {
	var f pinFlags
	cmd := &cobra.Command{
		Use:   "pin {--drone HOST:PORT|NAME | --relay URL --drone-id NAME} --psk PATH --out PATH [--expect FINGERPRINT] [--timeout 15s]",
		Short: "Fetch the drone's public key over the link and save it for --drone-pub once its fingerprint is checked",
		Long: `Ask the drone at HOST:PORT for its public key over the link, print the key's
fingerprint in both forms, and write the key to PATH (PKIX PEM, mode 0644, as keygen
writes .pub files) for use as --drone-pub, but only once the fingerprint is checked:

  --expect FINGERPRINT   PATH is written only if the key's fingerprint is this one,
                         in either form; otherwise nothing is written (exit 3)
  without --expect       standard input must be a terminal: the fingerprint is shown
                         and PATH is written only if you type yes (or paste the
                         fingerprint, which must then match), as ssh asks on a first
                         connection; any other answer writes nothing (exit 3)

Check the fingerprint against the one the drone's administrator reads out from
"dronelink fingerprint drone.key.pub" on the drone, over a channel you trust (in
person, by phone, in a signed message). That comparison is what makes the pinned key
trustworthy. The drone answers only holders of the fleet PSK and its answer carries the
PSK MAC, which keeps everyone else out; but any holder of the PSK on the path (another
operator's machine, a stolen PSK) can answer with a key of its own, and only the
fingerprint tells.

` + fingerprintFormsHelp + `

--expect takes either form: "SHA256:" in any case and the base64 exactly, or the 50
digits with spaces, hyphens or no separators at all.

PATH must not exist. It is checked before anything is sent, and the key is written at
the end, atomically and only if PATH still does not exist: an existing file is never
overwritten. The drone must speak the native protocol (dronelinkd --transport native,
the default): a drone in DTLS mode has no key to pin, and does not answer.

Exit codes: 0 pinned; 1 local error (PATH exists, the PSK file); 2 usage error (also:
no --expect and standard input is not a terminal); 3 not pinned: the fingerprint is not
the expected one or was not confirmed; 5 no answer within --timeout (drone down or not
native, wrong address or PSK), or interrupted.`,
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&f.drone, "drone", "", "the drone's `HOST:PORT`, or its NAME in the profile (--config), which gives its address and PSK")
	fs.StringVar(&f.psk, "psk", "", "the fleet PSK file `PATH`, mode 0600: refused if group or others can access it")
	fs.StringVar(&f.out, "out", "", "write the drone's public key to `PATH` (must not exist)")
	fs.StringVar(&f.expect, "expect", "", "pin only a key with this `FINGERPRINT` (SHA256:... or the 50 digits); without it, ask on the terminal")
	fs.DurationVar(&f.timeout, "timeout", 15*time.Second, "give up when no answer came within this `DURATION`")
	f.relay.register(fs)
	requireFlags(cmd, "out")
	cmd.RunE = a.runE(func(cmd *cobra.Command, _ []string) error {
		// A drone named in the profile gives the address (or the relay) and the PSK;
		// flags win.
		if f.drone != "" {
			p, err := a.droneProfile(f.drone)
			if err != nil {
				return err
			}
			if p != nil {
				f.drone = p.Address()
				p.Fill(cmd.Flags(), map[string]*string{"psk": &f.psk}, nil)
				f.relay.fill(p, cmd.Flags(), nil)
			}
		}
		if f.drone == "" && !f.relay.used() {
			return usagef(`required flag(s) "drone" not set (--drone HOST:PORT|NAME, or --relay URL with --drone-id NAME)`)
		}
		if f.psk == "" {
			return usagef(`required flag(s) "psk" not set (give --psk, or a drone named in the profile with a psk)`)
		}
		return a.pin(cmd.Context(), &f)
	})
	return cmd
}

// pinFlags are pin's flags.
type pinFlags struct {
	drone, psk, out, expect string
	relay                   relayFlags
	timeout                 time.Duration
}

// maxPinAnswer bounds the line read at the prompt (a pasted fingerprint is at most 71 bytes).
const maxPinAnswer = 256

// pin fetches, checks and writes the drone's key: every local check first, then one
// exchange with the drone, then the fingerprint check, then the write.
func (a *app) pin(ctx context.Context, f *pinFlags) error {
	if f.timeout <= 0 {
		return usagef("--timeout must be positive, got %s", f.timeout)
	}
	if f.out == "" {
		return usagef("--out must not be empty")
	}
	var expect string
	var expectDigits bool
	if f.expect != "" {
		var err error
		if expect, expectDigits, err = crypto.ParseFingerprint(f.expect); err != nil {
			return usagef("bad --expect: %v", err)
		}
	} else if a.stdinTerminal < 0 {
		return usagef("no --expect and standard input is not a terminal: nobody can confirm the fingerprint; give --expect FINGERPRINT (the drone's, from its administrator)")
	}
	relayCfg, err := f.relay.config(f.drone, func(name string) string { return "--" + name })
	if err != nil {
		return err
	}
	drone := relay.DroneAddr
	if relayCfg != nil {
		f.drone = relayName(relayCfg)
	} else if drone, err = resolveDrone(f.drone); err != nil {
		return err
	}
	if err := checkNewFile(f.out); err != nil {
		return err
	}
	psk, err := loadPSK(f.psk, "--psk")
	if err != nil {
		return err
	}
	defer crypto.Wipe(psk[:])

	pub, err := a.fetchDroneKey(ctx, drone, relayCfg, f, psk)
	if err != nil {
		return err
	}
	if expect != "" {
		got := crypto.FingerprintIn(pub, expectDigits)
		if _, err := fmt.Fprint(a.stdout, fingerprintBlock(f.drone, pub)); err != nil {
			return localf("cannot print the fingerprint: %v", err)
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(expect)) != 1 {
			return failf(ExitRefused, "refused: the drone at %s has key %s, not the expected %s; nothing written", f.drone, got, expect)
		}
		return a.writePinned(f, pub, "the fingerprint matches --expect")
	}
	return a.confirmPin(f, pub)
}

// checkNewFile refuses a path that exists, or whose directory does not: nothing is sent to
// the drone for a key that could not be written.
func checkNewFile(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return localf("%s already exists; refusing to overwrite it (nothing was sent to the drone)", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return localf("cannot check %s: %v", path, pathCause(err))
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
		return localf("cannot write %s: directory %s does not exist", path, filepath.Dir(path))
	}
	return nil
}

// fetchDroneKey asks the drone for its key until the timeout, showing progress.
func (a *app) fetchDroneKey(ctx context.Context, drone netip.AddrPort, relayCfg *relay.Config, f *pinFlags, psk crypto.PSK) (*rsa.PublicKey, error) {
	ctx, stopSignals := a.signalContext(ctx)
	defer stopSignals() // the prompt that may follow is left to the default Ctrl-C
	deadline := time.Now().Add(f.timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	prog := a.newProgress(deadline)
	defer prog.clear()
	conn, err := a.openConn(drone, relayCfg, f.timeout)
	if err != nil {
		return nil, err
	}
	pub, err := link.RequestDroneKey(ctx, link.KeyRequestConfig{Conn: conn, Drone: drone, PSK: psk,
		OnAttempt: func(n int) { prog.showLeft("waiting for the drone at %s: key request attempt %d", f.drone, n) }})
	if err == nil {
		return pub, nil
	}
	var why string
	if refused := refusalOf(err); refused != nil {
		why = fmt.Sprintf("; an answer was refused: %v", refused)
	}
	switch {
	case errors.Is(err, link.ErrNoListener):
		return nil, failf(ExitNoAnswer, "%v; nothing written", err)
	case errors.Is(err, context.Canceled):
		return nil, failf(ExitNoAnswer, "interrupted: no answer from the drone at %s yet%s; nothing written", f.drone, why)
	case errors.Is(err, context.DeadlineExceeded):
		return nil, failf(ExitNoAnswer, "no answer from the drone at %s within %s (is it running, in native mode? same PSK?)%s; nothing written",
			f.drone, shortDuration(f.timeout), why)
	}
	return nil, localf("%v", err)
}

// refusalOf is the error in err's tree that says why an answer was refused for its key,
// or nil.
func refusalOf(err error) error {
	if m, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range m.Unwrap() {
			if errors.Is(e, link.ErrBadAnswerKey) {
				return e
			}
		}
	}
	return nil
}

// fingerprintBlock is what pin shows of the drone's key.
func fingerprintBlock(drone string, pub *rsa.PublicKey) string {
	return fmt.Sprintf("The drone at %s has key fingerprint\n  %s\n  %s\n", drone, crypto.Fingerprint(pub), crypto.DigitFingerprint(pub))
}

// confirmPin asks on the terminal, as ssh does on a first connection: "yes", or the
// fingerprint pasted (which must match), pins the key; anything else does not. The
// question goes to standard error, where the terminal is, the result to standard output.
func (a *app) confirmPin(f *pinFlags, pub *rsa.PublicKey) error {
	fmt.Fprint(a.stderr, fingerprintBlock(f.drone, pub))
	fmt.Fprintf(a.stderr, "Compare it with the fingerprint the drone's administrator reads out (dronelink fingerprint on the drone).\n"+
		"Type yes to pin it to %s, or paste the expected fingerprint: ", f.out)
	line, err := readLine(a.stdin, maxPinAnswer)
	if err != nil && !errors.Is(err, io.EOF) {
		return localf("cannot read the answer: %v", err)
	}
	answer := strings.TrimSpace(string(line))
	if len(line) == 0 || line[len(line)-1] != '\n' {
		fmt.Fprintln(a.stderr) // end the prompt's line (end of input, or Ctrl-D)
	}
	if strings.EqualFold(answer, "yes") {
		return a.writePinned(f, pub, "confirmed")
	}
	if want, digits, err := crypto.ParseFingerprint(answer); err == nil {
		got := crypto.FingerprintIn(pub, digits)
		if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			return failf(ExitRefused, "refused: the drone at %s has key %s, not the expected %s; nothing written", f.drone, got, want)
		}
		return a.writePinned(f, pub, "the fingerprint matches")
	}
	return failf(ExitRefused, "not pinned: the fingerprint was not confirmed (the answer was not yes); nothing written")
}

// writePinned writes the key to f.out, never over an existing file, and says so.
func (a *app) writePinned(f *pinFlags, pub *rsa.PublicKey, why string) error {
	if err := crypto.SavePublicKey(f.out, pub); err != nil {
		if errors.Is(err, crypto.ErrFileExists) {
			return localf("%s appeared while pinning; refusing to overwrite it; nothing written", f.out)
		}
		return localf("%v", err)
	}
	if _, err := fmt.Fprintf(a.stdout, "pinned: %s; wrote the drone's key to %s (use it as --drone-pub)\n", why, f.out); err != nil {
		return localf("cannot print the result: %v", err)
	}
	return nil
}
