package operator

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

// passwordFlags are the ways to give a password. There is deliberately no flag that takes
// the password itself: command lines end up in shell histories and process listings.
type passwordFlags struct {
	file  string
	stdin bool
}

func (p *passwordFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.file, "password-file", "", "read the password from the first line of `PATH`")
	cmd.Flags().BoolVar(&p.stdin, "password-stdin", false, "read the password from one line of standard input")
	cmd.MarkFlagsMutuallyExclusive("password-file", "password-stdin")
}

// errNoPassword is the error when no password source is available.
var errNoPassword = usagef("no password: use --password-file, --password-stdin or run on a terminal")

// readPassword gets a password from the file, standard input or a no-echo prompt, in that
// order of preference. With confirm (setting a new password) the prompt asks twice. The
// caller wipes the result with crypto.Wipe.
func (a *app) readPassword(p passwordFlags, prompt string, confirm bool) ([]byte, error) {
	switch {
	case p.file != "":
		if err := crypto.InsecurePermissions(p.file); err != nil && !errors.Is(err, fs.ErrNotExist) {
			a.warn("%v", err)
		}
		f, err := os.Open(p.file)
		if err != nil {
			return nil, localf("cannot read password file %s: %v", p.file, pathCause(err))
		}
		defer f.Close()
		// Room for the longest password, a "\r\n" and one byte to notice a longer one.
		data, err := io.ReadAll(io.LimitReader(f, link.MaxPasswordSize+3))
		if err != nil {
			crypto.Wipe(data)
			return nil, localf("cannot read password file %s: %v", p.file, pathCause(err))
		}
		return checkPassword(data, "password file "+p.file)
	case p.stdin:
		data, err := readLine(a.stdin, link.MaxPasswordSize+3)
		if err != nil {
			crypto.Wipe(data)
			return nil, localf("cannot read the password from standard input: %v", err)
		}
		return checkPassword(data, "standard input")
	case a.stdinTerminal >= 0:
		pw, err := a.prompt(prompt)
		if err != nil {
			return nil, err
		}
		if !confirm {
			return checkPassword(pw, "the prompt")
		}
		again, err := a.prompt("Retype the password: ")
		if err != nil {
			crypto.Wipe(pw)
			return nil, err
		}
		same := subtle.ConstantTimeCompare(pw, again) == 1
		crypto.Wipe(again)
		if !same {
			crypto.Wipe(pw)
			return nil, localf("the passwords do not match")
		}
		return checkPassword(pw, "the prompt")
	}
	return nil, errNoPassword
}

// prompt reads a password from the terminal without echo.
func (a *app) prompt(text string) ([]byte, error) {
	fmt.Fprint(a.stderr, text)
	pw, err := term.ReadPassword(a.stdinTerminal)
	fmt.Fprintln(a.stderr)
	if err != nil {
		crypto.Wipe(pw)
		return nil, localf("cannot read the password from the terminal: %v", err)
	}
	return pw, nil
}

// readLine reads up to and excluding the first "\n" (or to EOF), at most limit bytes. It
// reads one byte at a time so nothing after the line is consumed.
func readLine(r io.Reader, limit int) ([]byte, error) {
	var line []byte
	var b [1]byte
	for len(line) < limit {
		n, err := r.Read(b[:])
		if n == 1 {
			line = append(line, b[0])
			if b[0] == '\n' {
				return line, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return line, nil
		}
		if err != nil {
			return line, err
		}
	}
	return line, nil
}

// checkPassword strips one trailing "\n" or "\r\n" from data and checks what is left: not
// empty, not too long, a single line. On error data is wiped.
func checkPassword(data []byte, from string) ([]byte, error) {
	pw := data
	if n := len(pw); n > 0 && pw[n-1] == '\n' {
		pw = pw[:n-1]
		if n := len(pw); n > 0 && pw[n-1] == '\r' {
			pw = pw[:n-1]
		}
	}
	var err error
	switch {
	case len(pw) == 0:
		err = localf("empty password from %s", from)
	case len(pw) > link.MaxPasswordSize:
		err = localf("password from %s is longer than %d bytes", from, link.MaxPasswordSize)
	case bytes.ContainsAny(pw, "\r\n"):
		err = localf("password from %s has more than one line", from)
	}
	if err != nil {
		crypto.Wipe(data)
		return nil, err
	}
	return pw, nil
}

// warn prints one warning line to stderr.
func (a *app) warn(format string, args ...any) {
	fmt.Fprintf(a.stderr, "dronelink: warning: %s\n", oneLine(fmt.Sprintf(format, args...)))
}

// pathCause drops the *fs.PathError wrapper, whose message repeats the path.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
