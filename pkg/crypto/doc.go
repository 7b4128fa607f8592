// Package crypto holds dronelink's key material handling and the small set of
// cryptographic primitives the link protocol (pkg/link) is built from.
//
// Everything here is a thin, opinionated wrapper around the Go standard
// library and golang.org/x/crypto; no primitive is implemented in this
// package. The wrappers fix every parameter (hash, label, salt length, nonce
// layout) so that the protocol code cannot pick a weak or mismatched one, and
// they keep secrets out of error messages: no function in this package ever
// formats a key, PSK, password or session key into an error, and nothing here
// logs or panics with secret data.
//
// # Why these primitives
//
// RSA keys identify operators and drones. They are 2048–4096 bits (3072 by
// default, ~128-bit security per NIST SP 800-57); smaller keys are refused
// because they are within reach of well-funded attackers, larger ones because
// they only add handshake latency on a small drone CPU. Keys are stored as
// PKCS#8 ("PRIVATE KEY") and PKIX ("PUBLIC KEY") PEM, the formats OpenSSL 3
// and ssh-keygen -m PKCS8 produce, and are named by a [KeyID] (truncated
// SHA-256 of the PKIX encoding) and shown to humans as a [Fingerprint] in the
// same "SHA256:..." form ssh-keygen -l prints.
//
//   - Key wrap: RSA-OAEP with SHA-256 (and MGF1-SHA-256) and a fixed label
//     ([WrapSecret], [UnwrapSecret]). OAEP is used rather than PKCS#1 v1.5
//     encryption because v1.5 padding is malleable and gives rise to
//     Bleichenbacher-style padding-oracle attacks; for the same reason
//     [UnwrapSecret] reports every failure as the single [ErrDecrypt].
//   - Signatures: RSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt
//     ([SignPSS], [VerifyPSS]). PSS has a security proof that PKCS#1 v1.5
//     signatures lack; the verifier insists on the exact salt length so that
//     only signatures produced by this package are accepted.
//   - Key agreement: X25519 ([GenerateX25519], [X25519]) from crypto/ecdh.
//     Fresh ephemeral X25519 keys per session give forward secrecy: stealing
//     an RSA key later does not reveal past session keys. X25519 is fast,
//     constant time, and has no invalid-curve pitfalls; low-order peer keys
//     (all-zero shared secret) are rejected with [ErrBadPublicKey].
//   - Key derivation: HKDF-SHA256 (RFC 5869) from crypto/hkdf ([HKDF],
//     [HKDFExtract], [HKDFExpand]) turns the X25519 output, the wrapped
//     secret and the pre-shared key into independent directional keys.
//   - Packet protection: ChaCha20-Poly1305 (RFC 8439) from
//     golang.org/x/crypto ([AEAD]). It is fast in software on the ARM cores
//     typical of flight controllers and companion computers, which often lack
//     AES instructions (where AES-GCM would be slow or leak through cache
//     timing). The nonce is built from a 64-bit packet counter as WireGuard
//     does, so it never needs to be sent or stored separately.
//   - Keyed MAC: HMAC-SHA256 (RFC 2104/4231) ([MAC]) for cookies and
//     pre-authentication checks, compared in constant time.
//   - Pre-shared key: a 32-byte random [PSK] mixed into the key schedule so
//     that a future break of RSA or X25519 alone does not expose traffic. It
//     is stored as 64 hex digits, mode 0600.
//
// Password hashing (argon2id) deliberately does not live here: it belongs to
// the user database, which is its only consumer.
//
// # Randomness
//
// Functions that take a random io.Reader use crypto/rand.Reader when it is
// nil. Note that since Go 1.26 crypto/rsa.GenerateKey and crypto/ecdh key
// generation ignore a caller-supplied reader (always using the system CSPRNG)
// unless GODEBUG=cryptocustomrand=1 is set; OAEP and PSS still read their
// seed and salt from the reader given.
//
// # Concurrency
//
// Package-level functions are safe for concurrent use. [AEAD] and [MAC] keep
// per-instance scratch state to avoid allocation and are not: use one per
// goroutine (for example one per direction of a session).
package crypto
