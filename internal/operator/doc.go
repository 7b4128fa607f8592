// Package operator is the dronelink command-line tool for operators and administrators:
// generating RSA keys and the fleet PSK, printing key fingerprints for pinning, editing the
// drone's user database, sending commands to a drone and waiting for the acknowledgement,
// and receiving telemetry.
//
// Every subcommand is built by a function that takes the tool's standard streams, so tests
// run the real command lines against buffers. The contract that scripts rely on:
//
//   - Results go to standard output; on failure exactly one line "dronelink: <message>"
//     goes to standard error, and the exit status says what kind of failure it was
//     (see the exit codes in exit.go and in "dronelink --help").
//   - Passwords are never taken from the command line: they come from a file
//     (--password-file), one line of standard input (--password-stdin) or a prompt without
//     echo when standard input is a terminal.
//   - Files with secrets (private keys, the PSK) are written with mode 0600 and never
//     overwritten; a key or PSK file that group or others can access is refused (exit 1,
//     one line naming the file, its mode and the chmod to run), as ssh refuses such a key.
//     A password file open to them draws a warning.
//   - User database edits go through userdb.Update: locked against concurrent editors and
//     written atomically, so a failed edit leaves the file as it was.
//   - Progress (handshake and login attempts, retries, time left) is shown on one
//     overwritten line only when standard error is a terminal.
package operator
