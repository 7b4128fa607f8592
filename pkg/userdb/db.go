package userdb

import (
	"bytes"
	"cmp"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

// Sentinel errors; test for them with errors.Is. Errors from this package add
// detail (user names, fingerprints, field names) but never a password or a
// password hash.
var (
	// ErrUserExists reports adding a user whose name is taken.
	ErrUserExists = errors.New("user already exists")
	// ErrNoSuchUser reports a user name that is not in the database.
	ErrNoSuchUser = errors.New("no such user")
	// ErrKeyInUse reports a key that is already authorised (for another
	// user, or twice for the same user).
	ErrKeyInUse = errors.New("key already in use")
	// ErrCorrupt reports database contents that do not parse or validate.
	// Parse and Load errors wrap it (and, where one applies, the more
	// specific sentinel as well).
	ErrCorrupt = errors.New("corrupt user database")
	// ErrBadName reports a user name that is empty, longer than 64 bytes or
	// has characters outside A-Z a-z 0-9 . _ -.
	ErrBadName = errors.New("invalid user name")
	// ErrBadRole reports a role other than pilot or observer.
	ErrBadRole = errors.New("invalid role")
	// ErrBadHash reports a password hash that is not an acceptable argon2id
	// PHC string.
	ErrBadHash = errors.New("invalid password hash")
	// ErrNoKeys reports a user without any key: adding one, or removing a
	// user's last key.
	ErrNoKeys = errors.New("a user needs at least one key")
	// ErrNoSuchKey reports a fingerprint that is not one of the user's keys.
	ErrNoSuchKey = errors.New("no such key")
)

// formatVersion is the only file format version this package reads and
// writes.
const formatVersion = 1

// maxNameLen is the longest user name; it must fit the login message.
const maxNameLen = 64

// Compile-time check that a valid name fits the login message.
const _ = uint(link.MaxUserNameSize - maxNameLen)

// User is one user as stored. Keys and Fingerprints are parallel slices. The
// keys are shared with the database and must not be modified.
type User struct {
	Name         string
	Role         link.Role
	Keys         []*rsa.PublicKey
	Fingerprints []string

	passwordHash string
}

// CheckPassword reports whether password is the user's password (see
// VerifyPassword). It is slow on purpose (argon2id).
func (u User) CheckPassword(password []byte) (bool, error) {
	return VerifyPassword(u.passwordHash, password)
}

// UserInfo is a user without secrets, for listings.
type UserInfo struct {
	Name         string
	Role         link.Role
	Fingerprints []string
}

// keyRec is one authorised key with everything derived from it.
type keyRec struct {
	pub *rsa.PublicKey
	id  crypto.KeyID
	fp  string
	pem string // canonical PKIX PEM
}

// record is one user. Records are never modified once in a DB.
type record struct {
	name string
	role link.Role
	hash string
	keys []keyRec
}

// keyOwner is what the key index maps a KeyID to.
type keyOwner struct {
	user *record
	pub  *rsa.PublicKey
}

// DB is an immutable, validated snapshot of the user database. It is safe for
// concurrent use by any number of goroutines. Use Empty, Parse or Load to get
// one; the edit methods return new snapshots. A nil *DB is not valid.
type DB struct {
	users  []*record // sorted by name
	byName map[string]*record
	byKey  map[crypto.KeyID]keyOwner
	// dummy are the parameters of the dummy hash an unknown user's login costs: those of
	// most users' hashes (see dummyParams), so that it costs what a real check costs.
	dummy Params
}

var _ link.Authenticator = (*DB)(nil)

// Empty returns a database without users.
func Empty() *DB {
	db, _ := build(nil)
	return db
}

// build indexes users (taking ownership of the slice) after checking that
// names and keys are unique. Errors wrap ErrUserExists or ErrKeyInUse.
func build(users []*record) (*DB, error) {
	slices.SortFunc(users, func(a, b *record) int { return strings.Compare(a.name, b.name) })
	db := &DB{
		users:  users,
		byName: make(map[string]*record, len(users)),
		byKey:  make(map[crypto.KeyID]keyOwner, len(users)),
	}
	for _, u := range users {
		if _, dup := db.byName[u.name]; dup {
			return nil, fmt.Errorf("%w: %q", ErrUserExists, u.name)
		}
		db.byName[u.name] = u
		for _, k := range u.keys {
			if o, dup := db.byKey[k.id]; dup {
				return nil, fmt.Errorf("%w: key %s of user %q is also authorised for user %q", ErrKeyInUse, k.fp, u.name, o.user.name)
			}
			db.byKey[k.id] = keyOwner{user: u, pub: k.pub}
		}
	}
	db.dummy = dummyParams(users)
	return db, nil
}

// dummyParams are the argon2id parameters most users' hashes have (ties go to the
// costlier), or DefaultParams when there is no usable hash. A login of an unknown user
// costs one hash with them: with hashes made with other than the default parameters
// (dronelink user add --argon2-memory ...), a default-cost dummy would take another time
// than a real check and tell which user names exist.
func dummyParams(users []*record) Params {
	count := map[Params]int{}
	for _, u := range users {
		if p, _, _, err := decodePHC(u.hash); err == nil {
			count[p]++
		}
	}
	if len(count) == 0 {
		return DefaultParams
	}
	ps := slices.Collect(maps.Keys(count))
	slices.SortFunc(ps, func(a, b Params) int { // most common first, then costliest
		return cmp.Or(cmp.Compare(count[b], count[a]), cmp.Compare(b.cost(), a.cost()),
			cmp.Compare(b.MemoryKiB, a.MemoryKiB), cmp.Compare(b.Threads, a.Threads),
			cmp.Compare(b.SaltLen, a.SaltLen), cmp.Compare(b.KeyLen, a.KeyLen))
	})
	return ps[0]
}

// MaxHashMemoryKiB is the most memory (argon2id m, in KiB) one password check can take
// with this database: the largest m of the users' hashes and of the dummy hash an unknown
// user's login costs. A drone's password checks take at most LoginWorkers times this.
func (db *DB) MaxHashMemoryKiB() uint32 {
	m := db.dummy.MemoryKiB
	for _, u := range db.users {
		if p, _, _, err := decodePHC(u.hash); err == nil {
			m = max(m, p.MemoryKiB)
		}
	}
	return m
}

// checkName validates a user name. Errors wrap ErrBadName.
func checkName(name string) error {
	ok := len(name) >= 1 && len(name) <= maxNameLen
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w %s: want 1 to %d characters from A-Z a-z 0-9 . _ -", ErrBadName, show(name), maxNameLen)
	}
	return nil
}

// checkRole accepts the roles a user can have. Errors wrap ErrBadRole.
func checkRole(r link.Role) error {
	if r != link.RolePilot && r != link.RoleObserver {
		return fmt.Errorf("%w %s: want pilot or observer", ErrBadRole, r)
	}
	return nil
}

// newKeyRec checks a key's size and derives its id, fingerprint and PEM.
func newKeyRec(pub *rsa.PublicKey) (keyRec, error) {
	pemBytes, err := crypto.MarshalPublicKeyPEM(pub) // checks the size
	if err != nil {
		return keyRec{}, err
	}
	return keyRec{pub: pub, id: crypto.KeyIDOf(pub), fp: crypto.Fingerprint(pub), pem: string(pemBytes)}, nil
}

// appendKeys adds keys to keys, refusing duplicates within the user.
func appendKeys(keys []keyRec, add ...keyRec) ([]keyRec, error) {
	for _, k := range add {
		if slices.ContainsFunc(keys, func(o keyRec) bool { return o.id == k.id }) {
			return nil, fmt.Errorf("%w: key %s is listed twice", ErrKeyInUse, k.fp)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// show quotes an untrusted string for an error message, bounded in length.
// A string that looks like a password hash (a field put in the wrong place)
// is not shown at all.
func show(s string) string {
	if strings.Contains(s, "$argon2") {
		return "(value hidden: looks like a password hash)"
	}
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// --- File format ---

type fileKey struct {
	Fingerprint string `json:"fingerprint,omitempty"`
	PEM         string `json:"pem"`
}

type fileUser struct {
	Name     string    `json:"name"`
	Role     string    `json:"role"`
	Password string    `json:"password"`
	Keys     []fileKey `json:"keys"`
}

type fileDB struct {
	Version *int       `json:"version"`
	Users   []fileUser `json:"users"`
}

// Parse parses and validates a database file (see the package documentation
// for the format). Any problem is reported as one line wrapping ErrCorrupt
// that names the user and field at fault; it never contains a password hash.
func Parse(data []byte) (*DB, error) {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
	var f fileDB
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, corrupt("%s", jsonErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, corrupt("unexpected data after the JSON object")
	}
	if f.Version == nil {
		return nil, corrupt("missing \"version\"")
	}
	if *f.Version != formatVersion {
		return nil, corrupt("unsupported version %d (this program reads version %d)", *f.Version, formatVersion)
	}
	users := make([]*record, 0, len(f.Users))
	for i, fu := range f.Users {
		where := fmt.Sprintf("user %d", i+1)
		if err := checkName(fu.Name); err != nil {
			return nil, corrupt("%s: %w", where, err)
		}
		where = fmt.Sprintf("user %q", fu.Name)
		role, ok := link.ParseRole(fu.Role)
		if !ok {
			return nil, corrupt("%s: %w %s: want \"pilot\" or \"observer\"", where, ErrBadRole, show(fu.Role))
		}
		if fu.Password == "" {
			return nil, corrupt("%s: missing \"password\"", where)
		}
		if _, _, _, err := decodePHC(fu.Password); err != nil {
			return nil, corrupt("%s: password: %w", where, err)
		}
		if len(fu.Keys) == 0 {
			return nil, corrupt("%s: %w", where, ErrNoKeys)
		}
		rec := &record{name: fu.Name, role: role, hash: fu.Password}
		for j, fk := range fu.Keys {
			pub, err := crypto.ParsePublicKeyPEM([]byte(fk.PEM))
			if err != nil {
				return nil, corrupt("%s: key %d: %w", where, j+1, err)
			}
			k, err := newKeyRec(pub)
			if err != nil {
				return nil, corrupt("%s: key %d: %w", where, j+1, err)
			}
			if fk.Fingerprint != "" && fk.Fingerprint != k.fp {
				return nil, corrupt("%s: key %d: stored fingerprint %s does not match the key (%s)", where, j+1, show(fk.Fingerprint), k.fp)
			}
			if rec.keys, err = appendKeys(rec.keys, k); err != nil {
				return nil, corrupt("%s: %w", where, err)
			}
		}
		users = append(users, rec)
	}
	db, err := build(users)
	if err != nil {
		return nil, corrupt("%w", err)
	}
	return db, nil
}

// jsonErr renders a JSON decoding error in one bounded line.
func jsonErr(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "empty file"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	case errors.As(err, &se):
		return fmt.Sprintf("not valid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type (JSON %s)", te.Field, te.Value)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.HasPrefix(msg, "unknown field ") {
		return "unknown field " + show(strings.Trim(strings.TrimPrefix(msg, "unknown field "), `"`))
	}
	if len(msg) > 80 {
		msg = msg[:80] + "..."
	}
	return strings.ReplaceAll(msg, "\n", " ")
}

// Marshal encodes the database in the file format: users sorted by name, keys
// in the order they were added, canonical PKIX PEM, indented, with a trailing
// newline. Equal databases marshal to equal bytes.
func (db *DB) Marshal() ([]byte, error) {
	v := formatVersion
	f := fileDB{Version: &v, Users: make([]fileUser, 0, len(db.users))}
	for _, u := range db.users {
		fu := fileUser{Name: u.name, Role: u.role.String(), Password: u.hash, Keys: make([]fileKey, 0, len(u.keys))}
		for _, k := range u.keys {
			fu.Keys = append(fu.Keys, fileKey{Fingerprint: k.fp, PEM: k.pem})
		}
		f.Users = append(f.Users, fu)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&f); err != nil { // Encode adds the trailing newline
		return nil, fmt.Errorf("marshal user database: %w", err)
	}
	return buf.Bytes(), nil
}

// --- Queries ---

// Len returns the number of users.
func (db *DB) Len() int { return len(db.users) }

// Users lists the users sorted by name, without password hashes.
func (db *DB) Users() []UserInfo {
	out := make([]UserInfo, 0, len(db.users))
	for _, u := range db.users {
		fps := make([]string, len(u.keys))
		for i, k := range u.keys {
			fps[i] = k.fp
		}
		out = append(out, UserInfo{Name: u.name, Role: u.role, Fingerprints: fps})
	}
	return out
}

// User returns a copy of the named user.
func (db *DB) User(name string) (User, bool) {
	u, ok := db.byName[name]
	if !ok {
		return User{}, false
	}
	out := User{Name: u.name, Role: u.role, passwordHash: u.hash,
		Keys: make([]*rsa.PublicKey, len(u.keys)), Fingerprints: make([]string, len(u.keys))}
	for i, k := range u.keys {
		out.Keys[i], out.Fingerprints[i] = k.pub, k.fp
	}
	return out, true
}

// LookupKey returns the public key with the given id if it is authorised for
// any user. The key must not be modified.
func (db *DB) LookupKey(id crypto.KeyID) (*rsa.PublicKey, bool) {
	o, ok := db.byKey[id]
	return o.pub, ok
}

// HasKey reports whether the key is authorised for any user.
func (db *DB) HasKey(key crypto.KeyID) bool {
	_, ok := db.byKey[key]
	return ok
}

// KeyAuthorisedFor reports whether the user exists and key is one of the
// user's keys. After a reload, a session whose (user, key) pair is no
// longer authorised should be closed.
func (db *DB) KeyAuthorisedFor(user string, key crypto.KeyID) bool {
	o, ok := db.byKey[key]
	return ok && o.user.name == user
}

// Authorize is the cheap check, without the password: the user exists and key is one of
// the user's keys. It returns the user's current role with LoginOK, or RoleNone with
// LoginUnknownUser or LoginKeyNotAuthorised. It implements link.Authenticator; the drone
// calls it before spending a password check and before executing every command.
func (db *DB) Authorize(user string, key crypto.KeyID) (link.Role, link.LoginStatus) {
	u, ok := db.byName[user]
	if !ok {
		return link.RoleNone, link.LoginUnknownUser
	}
	if !slices.ContainsFunc(u.keys, func(k keyRec) bool { return k.id == key }) {
		return link.RoleNone, link.LoginKeyNotAuthorised
	}
	return u.role, link.LoginOK
}

// Login checks a login: the user exists, key (the key the session was opened with) is one
// of the user's keys, and the password matches. It implements link.Authenticator. The key
// check comes first and costs no argon2id, so the holder of one user's key cannot use
// logins as an oracle for another user's password; an unknown user still costs one dummy
// argon2id computation with the parameters of most users' hashes (DefaultParams in a
// database without users).
//
// Outcomes: LoginUnknownUser, LoginKeyNotAuthorised, LoginWrongPassword, LoginInternal
// (the stored hash could not be used, which Parse prevents), or the user's role with
// LoginOK.
func (db *DB) Login(user string, password []byte, key crypto.KeyID) (link.Role, link.LoginStatus) {
	u, ok := db.byName[user]
	if !ok {
		burnDummy(password, db.dummy)
		return link.RoleNone, link.LoginUnknownUser
	}
	if !slices.ContainsFunc(u.keys, func(k keyRec) bool { return k.id == key }) {
		return link.RoleNone, link.LoginKeyNotAuthorised
	}
	match, err := VerifyPassword(u.hash, password)
	switch {
	case err != nil:
		return link.RoleNone, link.LoginInternal
	case !match:
		return link.RoleNone, link.LoginWrongPassword
	}
	return u.role, link.LoginOK
}

// UserRole is the cheap check of the DTLS-PSK transport, without the password: the user
// exists, with its current role and LoginOK, or RoleNone and LoginUnknownUser. The drone
// calls it before spending a password check and before executing every command.
func (db *DB) UserRole(user string) (link.Role, link.LoginStatus) {
	u, ok := db.byName[user]
	if !ok {
		return link.RoleNone, link.LoginUnknownUser
	}
	return u.role, link.LoginOK
}

// CheckPassword checks a password login without a key: the user exists and the password
// matches. It is the password check of the DTLS-PSK transport (pkg/dtlslink), where the
// fleet PSK authenticates the peer and there is no operator key. Like Login it takes one
// argon2id computation in every case, including unknown users (a dummy hash with the
// parameters of most users' hashes, as Login), so that timing does not reveal which names
// exist.
//
// Outcomes: LoginUnknownUser, LoginWrongPassword, LoginInternal (the stored hash could
// not be used, which Parse prevents), or the user's role with LoginOK.
func (db *DB) CheckPassword(user string, password []byte) (link.Role, link.LoginStatus) {
	u, ok := db.byName[user]
	if !ok {
		burnDummy(password, db.dummy)
		return link.RoleNone, link.LoginUnknownUser
	}
	match, err := VerifyPassword(u.hash, password)
	switch {
	case err != nil:
		return link.RoleNone, link.LoginInternal
	case !match:
		return link.RoleNone, link.LoginWrongPassword
	}
	return u.role, link.LoginOK
}

// --- Edits (copy-on-write) ---

// replace returns a new DB with the named user's record swapped for rec (or
// removed if rec is nil), or an error wrapping ErrNoSuchUser.
func (db *DB) replace(name string, rec *record) (*DB, error) {
	users := make([]*record, 0, len(db.users))
	found := false
	for _, u := range db.users {
		if u.name == name {
			found = true
			if rec != nil {
				users = append(users, rec)
			}
			continue
		}
		users = append(users, u)
	}
	if !found {
		return nil, fmt.Errorf("%w: %q", ErrNoSuchUser, name)
	}
	return build(users)
}

// lookup returns the named user's record or an error wrapping ErrNoSuchUser.
func (db *DB) lookup(name string) (*record, error) {
	u, ok := db.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchUser, show(name))
	}
	return u, nil
}

// WithUser returns a copy of db with a new user. passwordHash must be an
// argon2id PHC string as HashPassword makes (ErrBadHash), role pilot or
// observer (ErrBadRole), and at least one key (ErrNoKeys) of 2048 to 4096
// bits (crypto.ErrKeyTooSmall, crypto.ErrKeyTooLarge) given, none of them
// already authorised (ErrKeyInUse). The receiver is unchanged.
func (db *DB) WithUser(name string, role link.Role, passwordHash string, keys ...*rsa.PublicKey) (*DB, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if _, exists := db.byName[name]; exists {
		return nil, fmt.Errorf("%w: %q", ErrUserExists, name)
	}
	if err := checkRole(role); err != nil {
		return nil, err
	}
	if _, _, _, err := decodePHC(passwordHash); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, ErrNoKeys
	}
	rec := &record{name: name, role: role, hash: passwordHash}
	for _, pub := range keys {
		k, err := newKeyRec(pub)
		if err != nil {
			return nil, err
		}
		if rec.keys, err = appendKeys(rec.keys, k); err != nil {
			return nil, err
		}
	}
	return build(append(slices.Clone(db.users), rec))
}

// WithoutUser returns a copy of db without the named user (ErrNoSuchUser).
func (db *DB) WithoutUser(name string) (*DB, error) {
	if _, err := db.lookup(name); err != nil {
		return nil, err
	}
	return db.replace(name, nil)
}

// WithPassword returns a copy of db with the user's password hash replaced
// (ErrNoSuchUser, ErrBadHash).
func (db *DB) WithPassword(name, passwordHash string) (*DB, error) {
	u, err := db.lookup(name)
	if err != nil {
		return nil, err
	}
	if _, _, _, err := decodePHC(passwordHash); err != nil {
		return nil, err
	}
	rec := *u
	rec.hash = passwordHash
	return db.replace(name, &rec)
}

// WithRole returns a copy of db with the user's role changed (ErrNoSuchUser,
// ErrBadRole).
func (db *DB) WithRole(name string, role link.Role) (*DB, error) {
	u, err := db.lookup(name)
	if err != nil {
		return nil, err
	}
	if err := checkRole(role); err != nil {
		return nil, err
	}
	rec := *u
	rec.role = role
	return db.replace(name, &rec)
}

// WithKey returns a copy of db with another key authorised for the user
// (ErrNoSuchUser; ErrKeyInUse if the key is already authorised for anyone;
// crypto.ErrKeyTooSmall or crypto.ErrKeyTooLarge).
func (db *DB) WithKey(name string, key *rsa.PublicKey) (*DB, error) {
	u, err := db.lookup(name)
	if err != nil {
		return nil, err
	}
	k, err := newKeyRec(key)
	if err != nil {
		return nil, err
	}
	if o, dup := db.byKey[k.id]; dup {
		return nil, fmt.Errorf("%w: key %s is already authorised for user %q", ErrKeyInUse, k.fp, o.user.name)
	}
	rec := *u
	rec.keys = append(slices.Clip(slices.Clone(u.keys)), k)
	return db.replace(name, &rec)
}

// WithoutKey returns a copy of db with the key of the given fingerprint
// ("SHA256:...", as crypto.Fingerprint and Users show it) removed from the
// user (ErrNoSuchUser, ErrNoSuchKey). The user's last key is not removed
// (ErrNoKeys): remove the user instead.
func (db *DB) WithoutKey(name string, fingerprint string) (*DB, error) {
	u, err := db.lookup(name)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(u.keys, func(k keyRec) bool { return k.fp == fingerprint })
	if i < 0 {
		return nil, fmt.Errorf("%w: user %q has no key %s", ErrNoSuchKey, name, show(fingerprint))
	}
	if len(u.keys) == 1 {
		return nil, fmt.Errorf("%w: %s is the last key of user %q; remove the user instead", ErrNoKeys, fingerprint, name)
	}
	rec := *u
	rec.keys = slices.Delete(slices.Clone(u.keys), i, i+1)
	return db.replace(name, &rec)
}
