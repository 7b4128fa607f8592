package link

import (
	"encoding/binary"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// typeByte is the first byte of every datagram: version in the high nibble, type in the low.
func typeByte(typ byte) byte { return ProtocolVersion<<4 | typ }

// PeekType returns the datagram type from the first byte. ok is false for an empty datagram
// or another protocol version.
func PeekType(pkt []byte) (typ byte, ok bool) {
	if len(pkt) == 0 || pkt[0]>>4 != ProtocolVersion {
		return 0, false
	}
	return pkt[0] & 0x0f, true
}

// Initiation is a parsed initiation datagram. Its slices alias the datagram they were
// parsed from.
type Initiation struct {
	Sender      uint16       // the operator's index for this session
	Replaces    uint16       // the drone's index of the session this one rekeys, or 0
	Timestamp   uint64       // unix nanoseconds; strictly increasing per operator key
	OperatorKey crypto.KeyID // the operator's key id
	DroneKey    crypto.KeyID // the drone key the secret is wrapped to
	Ephemeral   [publicSize]byte
	Wrapped     []byte // RSA-OAEP(drone key, 32-byte secret)
	Signature   []byte // RSA-PSS(operator key, Signed)
	Resume      []byte // HMAC(resume key of the Replaces session, Signed), or zeros
	Signed      []byte // the bytes the signature covers: everything before it
	Raw         []byte // the whole datagram, MAC included
}

// ParseInitiation checks the initiation's length, type and structure and fills init.
// It does not verify the MAC or the signature and allocates nothing.
func ParseInitiation(pkt []byte, init *Initiation) error {
	if len(pkt) < MinInitiationSize || len(pkt) > MaxInitiationSize || pkt[initOffType] != typeByte(TypeInitiation) {
		return ErrMalformed
	}
	wrapLen := int(binary.BigEndian.Uint16(pkt[initOffWrapLen:]))
	sigLen := len(pkt) - InitiationFixedSize - wrapLen
	if wrapLen < MinRSABytes || wrapLen > MaxRSABytes || sigLen < MinRSABytes || sigLen > MaxRSABytes {
		return ErrMalformed
	}
	sender := binary.BigEndian.Uint16(pkt[initOffSender:])
	if sender == 0 {
		return ErrMalformed
	}
	sigOff := initOffWrapped + wrapLen
	init.Sender = sender
	init.Replaces = binary.BigEndian.Uint16(pkt[initOffReplaces:])
	init.Timestamp = binary.BigEndian.Uint64(pkt[initOffTimestamp:])
	copy(init.OperatorKey[:], pkt[initOffOperator:initOffDrone])
	copy(init.DroneKey[:], pkt[initOffDrone:initOffEphemeral])
	copy(init.Ephemeral[:], pkt[initOffEphemeral:initOffWrapLen])
	init.Wrapped = pkt[initOffWrapped:sigOff:sigOff]
	init.Signature = pkt[sigOff : sigOff+sigLen : sigOff+sigLen]
	resumeOff := sigOff + sigLen
	init.Resume = pkt[resumeOff : resumeOff+resumeSize : resumeOff+resumeSize]
	init.Signed = pkt[:sigOff:sigOff]
	init.Raw = pkt
	return nil
}

// appendInitiationBody appends the signed part of an initiation (everything before the
// signature) to dst.
func appendInitiationBody(dst []byte, init *Initiation) []byte {
	dst = append(dst, typeByte(TypeInitiation))
	dst = binary.BigEndian.AppendUint16(dst, init.Sender)
	dst = binary.BigEndian.AppendUint16(dst, init.Replaces)
	dst = binary.BigEndian.AppendUint64(dst, init.Timestamp)
	dst = append(dst, init.OperatorKey[:]...)
	dst = append(dst, init.DroneKey[:]...)
	dst = append(dst, init.Ephemeral[:]...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(init.Wrapped)))
	return append(dst, init.Wrapped...)
}

// Response is a parsed response datagram.
type Response struct {
	Sender    uint16 // the drone's index for this session
	Receiver  uint16 // the operator's index, echoed from the initiation
	Flags     byte   // FlagLoginCarried
	Ephemeral [publicSize]byte
	Confirm   [tagSize]byte // key confirmation: proves the drone unwrapped the secret
}

// ParseResponse checks the response's length, type and structure and fills r. It does not
// verify the MAC or the confirmation.
func ParseResponse(pkt []byte, r *Response) error {
	if len(pkt) != ResponseSize || pkt[respOffType] != typeByte(TypeResponse) {
		return ErrMalformed
	}
	r.Sender = binary.BigEndian.Uint16(pkt[respOffSender:])
	r.Receiver = binary.BigEndian.Uint16(pkt[respOffReceiver:])
	r.Flags = pkt[respOffFlags]
	if r.Sender == 0 || r.Receiver == 0 || r.Flags&^respKnownFlags != 0 {
		return ErrMalformed
	}
	copy(r.Ephemeral[:], pkt[respOffEphemeral:respOffConfirm])
	copy(r.Confirm[:], pkt[respOffConfirm:respOffMAC])
	return nil
}

// appendResponsePrefix appends the response up to (not including) the confirmation.
func appendResponsePrefix(dst []byte, sender, receiver uint16, flags byte, ephemeral []byte) []byte {
	dst = append(dst, typeByte(TypeResponse))
	dst = binary.BigEndian.AppendUint16(dst, sender)
	dst = binary.BigEndian.AppendUint16(dst, receiver)
	dst = append(dst, flags)
	return append(dst, ephemeral...)
}

// ErrorCode says why the drone refused an initiation.
type ErrorCode byte

// Error codes carried by error datagrams.
const (
	CodeWrongDroneKey     ErrorCode = 1 // the secret is wrapped to a key the drone does not hold
	CodeUnknownOperator   ErrorCode = 2 // the operator key is not authorised
	CodeStale             ErrorCode = 3 // the timestamp is not newer than the last accepted one
	CodeBusy              ErrorCode = 4 // rate limited or session table full; retry later
	CodeBadSignature      ErrorCode = 5 // the signature did not verify
	maxErrorCode          ErrorCode = 5
	errorCodeUnknownLabel           = "unknown"
)

// String names the code for logs and metrics.
func (c ErrorCode) String() string {
	switch c {
	case CodeWrongDroneKey:
		return "wrong_drone_key"
	case CodeUnknownOperator:
		return "unknown_operator_key"
	case CodeStale:
		return "stale"
	case CodeBusy:
		return "busy"
	case CodeBadSignature:
		return "bad_signature"
	}
	return errorCodeUnknownLabel
}

// Err maps the code to the sentinel error an operator sees.
func (c ErrorCode) Err() error {
	switch c {
	case CodeWrongDroneKey:
		return ErrWrongDroneKey
	case CodeUnknownOperator:
		return ErrUnknownOperatorKey
	case CodeStale:
		return ErrStale
	case CodeBusy:
		return ErrRateLimited
	case CodeBadSignature:
		return ErrBadSignature
	}
	return ErrMalformed
}

// ErrorPacket is a parsed error datagram.
type ErrorPacket struct {
	Receiver  uint16    // the operator's index from the refused initiation
	Code      ErrorCode // why
	Timestamp uint64    // the refused initiation's timestamp, echoed
}

// ParseError checks the error datagram's length, type and fields and fills e. It does not
// verify the MAC.
func ParseError(pkt []byte, e *ErrorPacket) error {
	if len(pkt) != ErrorSize || pkt[errOffType] != typeByte(TypeError) {
		return ErrMalformed
	}
	e.Receiver = binary.BigEndian.Uint16(pkt[errOffReceiver:])
	e.Code = ErrorCode(pkt[errOffCode])
	e.Timestamp = binary.BigEndian.Uint64(pkt[errOffTimestamp:])
	if e.Receiver == 0 || e.Code == 0 || e.Code > maxErrorCode {
		return ErrMalformed
	}
	return nil
}

// appendErrorBody appends an error datagram without its MAC.
func appendErrorBody(dst []byte, e *ErrorPacket) []byte {
	dst = append(dst, typeByte(TypeError))
	dst = binary.BigEndian.AppendUint16(dst, e.Receiver)
	dst = append(dst, byte(e.Code))
	return binary.BigEndian.AppendUint64(dst, e.Timestamp)
}

// DataHeader is the clear header of a data datagram.
type DataHeader struct {
	Receiver uint16 // the receiving endpoint's session index
	Counter  uint32 // the sender's per-session counter; the AEAD nonce
}

// ParseDataHeader checks a data datagram's length and type and returns its header.
func ParseDataHeader(pkt []byte) (DataHeader, error) {
	// At least one plaintext byte: an empty message is never sealed.
	if len(pkt) <= DataOverhead || len(pkt) > MaxDatagramSize || pkt[dataOffType] != typeByte(TypeData) {
		return DataHeader{}, ErrMalformed
	}
	h := DataHeader{
		Receiver: binary.BigEndian.Uint16(pkt[dataOffReceiver:]),
		Counter:  binary.BigEndian.Uint32(pkt[dataOffCounter:]),
	}
	if h.Receiver == 0 {
		return DataHeader{}, ErrMalformed
	}
	return h, nil
}

// appendDataHeader appends a data datagram's clear header.
func appendDataHeader(dst []byte, receiver uint16, counter uint32) []byte {
	dst = append(dst, typeByte(TypeData))
	dst = binary.BigEndian.AppendUint16(dst, receiver)
	return binary.BigEndian.AppendUint32(dst, counter)
}

// verifyTrailingMAC checks the HMAC in the last macSize bytes of pkt over the rest.
func verifyTrailingMAC(m *crypto.MAC, pkt []byte) bool {
	if len(pkt) < macSize {
		return false
	}
	body := len(pkt) - macSize
	return m.Verify(pkt[:body], pkt[body:])
}
