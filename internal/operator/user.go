package operator

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/userdb"
)

func (a *app) newUserCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Manage the drone's user database",
		Long: `Manage the drone's user database: who may log in, with which password, from which
operator keys, in which role (pilot: commands and telemetry; observer: telemetry only).

Every edit locks the database against other editors and replaces the file atomically
(mode 0600); a failed edit leaves it unchanged. Only "user add" creates a missing file.`,
		Args: noSubcommand,
		RunE: a.runE(missingSubcommand),
	}
	cmd.AddCommand(a.newUserAddCmd(), a.newUserDelCmd(), a.newUserPasswdCmd(), a.newUserListCmd(),
		a.newUserKeyCmd(), a.newUserRoleCmd())
	return cmd
}

// userFlags are the flags most user subcommands share.
type userFlags struct {
	db, name string
}

func (u *userFlags) register(cmd *cobra.Command, withName bool) {
	cmd.Flags().StringVar(&u.db, "db", "", "the user database file `PATH`")
	requireFlags(cmd, "db")
	if withName {
		cmd.Flags().StringVar(&u.name, "name", "", "the user's `NAME`")
		requireFlags(cmd, "name")
	}
}

// parseRole parses a --role value.
func parseRole(s string) (link.Role, error) {
	r, ok := link.ParseRole(s)
	if !ok {
		return link.RoleNone, usagef("bad role %q: want pilot or observer", s)
	}
	return r, nil
}

// loadDB loads the database for a read or as the check before an edit. With mayBeMissing
// a missing file is an empty database.
func loadDB(path string, mayBeMissing bool) (*userdb.DB, error) {
	db, err := userdb.Load(path)
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, fs.ErrNotExist) && mayBeMissing:
		return userdb.Empty(), nil
	}
	return nil, dbError(path, err)
}

// dbError phrases a user database error as one line.
func dbError(path string, err error) error {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return err
	case errors.Is(err, fs.ErrNotExist):
		return localf("user database %s does not exist (\"dronelink user add\" creates it)", path)
	case errors.Is(err, userdb.ErrNoSuchUser):
		return localf("%v (in %s)", err, path)
	}
	return localf("%v", err)
}

// editDB applies fn to the database under its lock; create only for user add.
func editDB(path string, create bool, fn func(*userdb.DB) (*userdb.DB, error)) error {
	if err := userdb.Update(path, create, fn); err != nil {
		return dbError(path, err)
	}
	return nil
}

// checkNewUser checks what can be checked before asking for a password: the name, that
// the user does not exist yet and that no key is in use. editDB checks it all again
// under the lock.
func checkNewUser(db *userdb.DB, name string, role link.Role, keys []*rsa.PublicKey) error {
	// The hash is checked after the name, so an empty one reveals only name errors.
	if _, err := userdb.Empty().WithUser(name, role, "", keys...); errors.Is(err, userdb.ErrBadName) {
		return localf("%v", err)
	}
	if _, exists := db.User(name); exists {
		return localf("user %s already exists", name)
	}
	seen := map[crypto.KeyID]bool{}
	for _, k := range keys {
		id := crypto.KeyIDOf(k)
		if seen[id] {
			return localf("key %s is given twice", crypto.Fingerprint(k))
		}
		seen[id] = true
		for _, u := range db.Users() {
			for _, fp := range u.Fingerprints {
				if fp == crypto.Fingerprint(k) {
					return localf("key %s is already authorised for user %s", fp, u.Name)
				}
			}
		}
	}
	return nil
}

// hashNewPassword reads a new password and hashes it with params.
func (a *app) hashNewPassword(p passwordFlags, name string, params userdb.Params) (string, error) {
	pw, err := a.readPassword(p, fmt.Sprintf("New password for %s: ", name), true)
	if err != nil {
		return "", err
	}
	defer crypto.Wipe(pw)
	hash, err := userdb.HashPassword(pw, params)
	if err != nil {
		return "", localf("%v", err)
	}
	return hash, nil
}

func (a *app) newUserAddCmd() *cobra.Command {
	var u userFlags
	var role string
	var pubkeys []string
	var pw passwordFlags
	var cost argon2Flags
	cmd := &cobra.Command{
		Use:   "add --db PATH --name NAME --role pilot|observer --pubkey PATH [--pubkey PATH...] [--password-file PATH | --password-stdin] [--argon2-memory MiB] [--argon2-time N] [--argon2-threads N]",
		Short: "Add a user",
		Long: `Add a user with a role, one or more authorised operator public keys and a password
(hashed with argon2id). Creates the database if it does not exist. A key can be
authorised for one user only.

` + argon2Help,
		Args: noArgs,
	}
	u.register(cmd, true)
	cost.register(cmd)
	cmd.Flags().StringVar(&role, "role", "", "`ROLE`: pilot (commands and telemetry) or observer (telemetry only)")
	cmd.Flags().StringArrayVar(&pubkeys, "pubkey", nil, "an authorised operator public key file `PATH` (repeatable)")
	pw.register(cmd)
	requireFlags(cmd, "role", "pubkey")
	cmd.RunE = a.runE(func(*cobra.Command, []string) error {
		r, err := parseRole(role)
		if err != nil {
			return err
		}
		params, err := cost.params(a.hashParams)
		if err != nil {
			return err
		}
		keys := make([]*rsa.PublicKey, 0, len(pubkeys))
		for _, p := range pubkeys {
			k, err := loadPublicKey(p, "--pubkey")
			if err != nil {
				return err
			}
			keys = append(keys, k)
		}
		db, err := loadDB(u.db, true)
		if err != nil {
			return err
		}
		if err := checkNewUser(db, u.name, r, keys); err != nil {
			return err
		}
		hash, err := a.hashNewPassword(pw, u.name, params)
		if err != nil {
			return err
		}
		err = editDB(u.db, true, func(db *userdb.DB) (*userdb.DB, error) {
			return db.WithUser(u.name, r, hash, keys...)
		})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "added user %s (%s) with %s\n", u.name, r, keyFingerprints(keys))
		return err
	})
	return cmd
}

func (a *app) newUserDelCmd() *cobra.Command {
	var u userFlags
	cmd := &cobra.Command{
		Use:   "del --db PATH --name NAME",
		Short: "Delete a user",
		Args:  noArgs,
	}
	u.register(cmd, true)
	cmd.RunE = a.runE(func(*cobra.Command, []string) error {
		if _, err := loadDB(u.db, false); err != nil {
			return err
		}
		err := editDB(u.db, false, func(db *userdb.DB) (*userdb.DB, error) { return db.WithoutUser(u.name) })
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "deleted user %s\n", u.name)
		return err
	})
	return cmd
}

func (a *app) newUserPasswdCmd() *cobra.Command {
	var u userFlags
	var pw passwordFlags
	var cost argon2Flags
	cmd := &cobra.Command{
		Use:   "passwd --db PATH --name NAME [--password-file PATH | --password-stdin] [--argon2-memory MiB] [--argon2-time N] [--argon2-threads N]",
		Short: "Set a user's password",
		Long:  "Set a user's password (hashed with argon2id).\n\n" + argon2Help,
		Args:  noArgs,
	}
	u.register(cmd, true)
	pw.register(cmd)
	cost.register(cmd)
	cmd.RunE = a.runE(func(*cobra.Command, []string) error {
		params, err := cost.params(a.hashParams)
		if err != nil {
			return err
		}
		db, err := loadDB(u.db, false)
		if err != nil {
			return err
		}
		if _, ok := db.User(u.name); !ok {
			return localf("no such user %s in %s", u.name, u.db)
		}
		hash, err := a.hashNewPassword(pw, u.name, params)
		if err != nil {
			return err
		}
		err = editDB(u.db, false, func(db *userdb.DB) (*userdb.DB, error) { return db.WithPassword(u.name, hash) })
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "changed the password of user %s\n", u.name)
		return err
	})
	return cmd
}

func (a *app) newUserListCmd() *cobra.Command {
	var u userFlags
	cmd := &cobra.Command{
		Use:   "list --db PATH",
		Short: "List the users, their roles and key fingerprints",
		Args:  noArgs,
	}
	u.register(cmd, false)
	cmd.RunE = a.runE(func(*cobra.Command, []string) error {
		db, err := loadDB(u.db, false)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tROLE\tFINGERPRINTS")
		for _, info := range db.Users() {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", info.Name, info.Role, strings.Join(info.Fingerprints, ","))
		}
		return tw.Flush()
	})
	return cmd
}

func (a *app) newUserKeyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Authorise or withdraw a user's operator keys",
		Args:  noSubcommand,
		RunE:  a.runE(missingSubcommand),
	}
	cmd.AddCommand(a.newUserKeyAddCmd(), a.newUserKeyDelCmd())
	return cmd
}

func (a *app) newUserKeyAddCmd() *cobra.Command {
	var u userFlags
	var pubkey string
	cmd := &cobra.Command{
		Use:   "add --db PATH --name NAME --pubkey PATH",
		Short: "Authorise another operator key for a user",
		Args:  noArgs,
	}
	u.register(cmd, true)
	cmd.Flags().StringVar(&pubkey, "pubkey", "", "the operator public key file `PATH`")
	requireFlags(cmd, "pubkey")
	cmd.RunE = a.runE(func(*cobra.Command, []string) error {
		key, err := loadPublicKey(pubkey, "--pubkey")
		if err != nil {
			return err
		}
		if _, err := loadDB(u.db, false); err != nil {
			return err
		}
		err = editDB(u.db, false, func(db *userdb.DB) (*userdb.DB, error) { return db.WithKey(u.name, key) })
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "added key %s to user %s\n", crypto.Fingerprint(key), u.name)
		return err
	})
	return cmd
}

func (a *app) newUserKeyDelCmd() *cobra.Command {
	var u userFlags
	var pubkey, fingerprint string
	cmd := &cobra.Command{
		Use:   "del --db PATH --name NAME (--pubkey PATH | --fingerprint SHA256:...)",
		Short: "Withdraw one of a user's operator keys",
		Long: `Withdraw one of a user's operator keys, named by its public key file or its
fingerprint. A user's last key cannot be withdrawn: delete the user instead.`,
		Args: noArgs,
	}
	u.register(cmd, true)
	cmd.Flags().StringVar(&pubkey, "pubkey", "", "the public key file `PATH` of the key")
	cmd.Flags().StringVar(&fingerprint, "fingerprint", "", "the key's fingerprint (`SHA256:...`, as user list shows it)")
	cmd.MarkFlagsMutuallyExclusive("pubkey", "fingerprint")
	cmd.MarkFlagsOneRequired("pubkey", "fingerprint")
	cmd.RunE = a.runE(func(*cobra.Command, []string) error {
		fp := fingerprint
		if pubkey != "" {
			key, err := loadPublicKey(pubkey, "--pubkey")
			if err != nil {
				return err
			}
			fp = crypto.Fingerprint(key)
		}
		if _, err := loadDB(u.db, false); err != nil {
			return err
		}
		err := editDB(u.db, false, func(db *userdb.DB) (*userdb.DB, error) { return db.WithoutKey(u.name, fp) })
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "removed key %s from user %s\n", fp, u.name)
		return err
	})
	return cmd
}

func (a *app) newUserRoleCmd() *cobra.Command {
	var u userFlags
	var role string
	cmd := &cobra.Command{
		Use:   "role --db PATH --name NAME --role pilot|observer",
		Short: "Change a user's role",
		Args:  noArgs,
	}
	u.register(cmd, true)
	cmd.Flags().StringVar(&role, "role", "", "`ROLE`: pilot (commands and telemetry) or observer (telemetry only)")
	requireFlags(cmd, "role")
	cmd.RunE = a.runE(func(*cobra.Command, []string) error {
		r, err := parseRole(role)
		if err != nil {
			return err
		}
		if _, err := loadDB(u.db, false); err != nil {
			return err
		}
		err = editDB(u.db, false, func(db *userdb.DB) (*userdb.DB, error) { return db.WithRole(u.name, r) })
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "user %s is now %s\n", u.name, r)
		return err
	})
	return cmd
}
