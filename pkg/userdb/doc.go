// Package userdb is the drone's user database: who may log in over the link,
// with which password, from which operator keys, and in which role.
//
// A user has a name, a role (pilot: may send commands and receives
// telemetry; observer: receives telemetry only), an argon2id password hash
// and one or more authorised RSA public keys. A key is authorised for at most
// one user, so the key a session was opened with (its [crypto.KeyID]) names
// the only user it may log in as.
//
// A [DB] is an immutable, fully validated snapshot and is safe for concurrent
// use by any number of goroutines. It implements link.Authenticator. Edits
// ([DB.WithUser], [DB.WithoutUser], [DB.WithPassword], [DB.WithKey],
// [DB.WithoutKey]) are copy-on-write: each returns a new DB and leaves the
// receiver unchanged, so a daemon can swap in a reloaded database with an
// atomic pointer while logins in flight keep using the old one.
//
// # File format
//
// The database is a JSON file, written by [Update] (through
// crypto.WriteFileAtomic, mode 0600) with the users sorted by name:
//
//	{
//	  "version": 1,
//	  "users": [
//	    {
//	      "name": "alice",
//	      "role": "pilot",
//	      "password": "$argon2id$v=19$m=65536,t=1,p=2$<salt>$<hash>",
//	      "keys": [
//	        {
//	          "fingerprint": "SHA256:...",
//	          "pem": "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n"
//	        }
//	      ]
//	    }
//	  ]
//	}
//
// The fields:
//
//   - version must be 1; anything else is refused rather than guessed at.
//   - name is 1 to 64 bytes (link.MaxUserNameSize) of A-Z a-z 0-9 . _ -
//     and unique.
//   - role is "pilot" or "observer".
//   - password is an argon2id hash in PHC string form (see [HashPassword]),
//     v=19, with the parameters bounded as described at [VerifyPassword] so
//     that a hostile file cannot make a login allocate gigabytes.
//   - keys holds at least one RSA public key of 2048 to 4096 bits as a PEM
//     "PUBLIC KEY" (PKIX) or "RSA PUBLIC KEY" (PKCS#1) block. The key id and
//     fingerprint are always recomputed from the PEM; the stored fingerprint
//     is informational for people reading the file, may be omitted (for a
//     hand-added key), and if present must match. When the file is
//     rewritten, every key is written back as canonical PKIX PEM together
//     with its fingerprint.
//
// Unknown fields, trailing data, and anything that does not validate make
// the whole file invalid ([ErrCorrupt]): the daemon keeps running with its
// previous snapshot rather than half a database. Error messages name the
// user and field at fault in one line and never contain a password hash.
//
// # Editing safely
//
// [Update] serialises read-modify-write cycles (for example two
// administrators running the CLI at once) with an exclusive flock(2) on the
// companion file PATH.lock, which is created with mode 0600 and left in
// place. Readers ([Load]) need no lock: the file is replaced atomically, so
// they see either the old or the new version.
package userdb
