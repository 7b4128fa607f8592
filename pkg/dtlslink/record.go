package dtlslink

import "encoding/binary"

// DTLS 1.2 record layer (RFC 6347 section 4.1, RFC 9146 for tls12_cid), as far as the
// server's demultiplexer needs to look into a datagram before pion/dtls takes it. Only the
// first record of a datagram is inspected; pion parses the rest.
//
//	record     +------+---------+-------+-----------------+-----------+--------+
//	           | type | version | epoch | sequence number | [CID (c)] | length |
//	           +------+---------+-------+-----------------+-----------+--------+
//	            0      1         3       5                 11          11+c
//
//	handshake  +----------+--------+---------+-----------------+-----------------+
//	(fragment) | msg type | length | msg seq | fragment offset | fragment length |
//	           +----------+--------+---------+-----------------+-----------------+
//	            13         14       17        19                22
//
//	ClientHello body: client version (2) at 25, random (32) at 27.
const (
	recOffType    = 0
	recOffVersion = 1
	recOffEpoch   = 3
	recOffCID     = 11 // tls12_cid records only; otherwise the length is here

	// recordHeaderSize is a plain record's header.
	recordHeaderSize = 13

	hsOffType     = recordHeaderSize // 13
	hsOffLength   = hsOffType + 1    // 14
	hsOffSeq      = hsOffLength + 3  // 17
	hsOffFragOff  = hsOffSeq + 2     // 19
	hsOffFragLen  = hsOffFragOff + 3 // 22
	chOffVersion  = hsOffFragLen + 3 // 25
	chOffRandom   = chOffVersion + 2 // 27
	clientHelloAt = chOffRandom + randomSize
	randomSize    = 32
)

// Record content types.
const (
	contentChangeCipherSpec = 20
	contentAlert            = 21
	contentHandshake        = 22
	contentApplicationData  = 23
	contentConnectionID     = 25 // RFC 9146 tls12_cid
)

// Handshake message types.
const (
	handshakeClientHello = 1
	handshakeServerHello = 2
)

// recordClass is what the first record of a datagram carries, for routing and metrics.
type recordClass uint8

const (
	classGarbage   recordClass = iota // not a DTLS 1.x record
	classHandshake                    // handshake or change_cipher_spec: part of a flight
	classAlert                        // an alert in clear (epoch 0)
	classData                         // application data, an encrypted alert, or a CID record
)

// classify looks at the first record header of a datagram.
func classify(pkt []byte) recordClass {
	if len(pkt) < recordHeaderSize || pkt[recOffVersion] != 0xfe {
		return classGarbage
	}
	switch pkt[recOffType] {
	case contentHandshake, contentChangeCipherSpec:
		return classHandshake
	case contentAlert:
		if binary.BigEndian.Uint16(pkt[recOffEpoch:]) == 0 {
			return classAlert
		}
		return classData
	case contentApplicationData, contentConnectionID:
		return classData
	}
	return classGarbage
}

// recordCID returns the connection ID of a tls12_cid record whose CIDs are cidLen bytes.
func recordCID(pkt []byte, cidLen int) ([]byte, bool) {
	if cidLen == 0 || len(pkt) < recOffCID+cidLen+2 || pkt[recOffType] != contentConnectionID || pkt[recOffVersion] != 0xfe {
		return nil, false
	}
	return pkt[recOffCID : recOffCID+cidLen], true
}

// clientHelloRandom returns the random of a datagram that starts with an unfragmented-start
// ClientHello in epoch 0: the only datagram that may open a new association. A retransmitted
// ClientHello, and the second one answering a HelloVerifyRequest, carry the same random
// (RFC 6347 section 4.2.1), so the random tells a new association from a repeat.
func clientHelloRandom(pkt []byte) ([randomSize]byte, bool) {
	var r [randomSize]byte
	if len(pkt) < clientHelloAt || pkt[recOffType] != contentHandshake || pkt[recOffVersion] != 0xfe ||
		binary.BigEndian.Uint16(pkt[recOffEpoch:]) != 0 || pkt[hsOffType] != handshakeClientHello ||
		pkt[hsOffFragOff] != 0 || pkt[hsOffFragOff+1] != 0 || pkt[hsOffFragOff+2] != 0 {
		return r, false
	}
	copy(r[:], pkt[chOffRandom:clientHelloAt])
	return r, true
}

// isClientHello reports whether a datagram starts with a ClientHello in epoch 0.
func isClientHello(pkt []byte) bool {
	_, ok := clientHelloRandom(pkt)
	return ok
}

// isServerHello reports whether a datagram starts with a ServerHello in epoch 0.
func isServerHello(pkt []byte) bool {
	return len(pkt) > hsOffType && pkt[recOffType] == contentHandshake && pkt[recOffVersion] == 0xfe &&
		binary.BigEndian.Uint16(pkt[recOffEpoch:]) == 0 && pkt[hsOffType] == handshakeServerHello
}
