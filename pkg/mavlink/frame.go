package mavlink

import (
	"encoding/binary"
	"errors"
)

// Frame layout constants (MAVLink 1 and 2).
const (
	MagicV1 = 0xFE // first byte of a MAVLink 1 frame
	MagicV2 = 0xFD // first byte of a MAVLink 2 frame

	headerV1 = 6  // magic, length, sequence, system, component, message id
	headerV2 = 10 // magic, length, incompat flags, compat flags, sequence, system, component, message id (3)
	crcSize  = 2

	// SignatureSize is what a signed MAVLink 2 frame adds: link id, 48-bit timestamp, 48-bit signature.
	SignatureSize = 13
	// IncompatSigned is the MAVLink 2 incompatibility flag of a signed frame; no other flag is defined.
	IncompatSigned = 0x01

	// MaxFrameSize is the largest frame: a MAVLink 2 header, 255 payload bytes, the checksum
	// and a signature.
	MaxFrameSize = headerV2 + 255 + crcSize + SignatureSize
	// MinFrameSize is the smallest: a MAVLink 1 frame with an empty payload.
	MinFrameSize = headerV1 + crcSize
)

// Parse errors.
var (
	ErrTruncated = errors.New("mavlink: frame runs past the end of the datagram")
	ErrMagic     = errors.New("mavlink: no frame starts here")
	ErrFlags     = errors.New("mavlink: unknown incompatibility flags")
	ErrChecksum  = errors.New("mavlink: bad checksum")
)

// Frame is one MAVLink frame in a datagram. Its slices alias the datagram.
type Frame struct {
	Raw     []byte // the whole frame, checksum and signature included
	Version uint8  // 1 or 2
	Seq     uint8
	SysID   uint8
	CompID  uint8
	MsgID   uint32
	Payload []byte // as sent: MAVLink 2 trims trailing zero bytes
	Signed  bool
	// Checked says the checksum was verified: the message id is one this package knows. An
	// unknown id's frame is well formed but its checksum could not be checked.
	Checked bool
}

// Next parses the frame at the start of b and returns it and the bytes after it. It checks
// the magic byte, the length, the incompatibility flags, and the checksum of every message
// id it knows. It allocates nothing.
func Next(b []byte) (f Frame, rest []byte, err error) {
	if len(b) == 0 {
		return f, b, ErrTruncated
	}
	var hdr, size int
	switch b[0] {
	case MagicV1:
		if len(b) < headerV1 {
			return f, b, ErrTruncated
		}
		hdr = headerV1
		size = hdr + int(b[1]) + crcSize
		f.Version, f.Seq, f.SysID, f.CompID, f.MsgID = 1, b[2], b[3], b[4], uint32(b[5])
	case MagicV2:
		if len(b) < headerV2 {
			return f, b, ErrTruncated
		}
		hdr = headerV2
		size = hdr + int(b[1]) + crcSize
		switch b[2] {
		case 0:
		case IncompatSigned:
			f.Signed = true
			size += SignatureSize
		default:
			return f, b, ErrFlags
		}
		f.Version, f.Seq, f.SysID, f.CompID = 2, b[4], b[5], b[6]
		f.MsgID = uint32(b[7]) | uint32(b[8])<<8 | uint32(b[9])<<16
	default:
		return f, b, ErrMagic
	}
	if len(b) < size {
		return f, b, ErrTruncated
	}
	end := hdr + int(b[1]) // end of payload
	f.Raw, f.Payload = b[:size:size], b[hdr:end:end]
	if extra, ok := crcExtra[f.MsgID]; ok {
		if checksum(b[1:end], extra) != binary.LittleEndian.Uint16(b[end:]) {
			return Frame{}, b, ErrChecksum
		}
		f.Checked = true
	}
	return f, b[size:], nil
}

// checksum is MAVLink's CRC-16/MCRF4XX (X.25) over the frame after the magic byte up to
// the end of the payload, then the message's CRC_EXTRA byte.
func checksum(b []byte, extra byte) uint16 {
	crc := uint16(0xffff)
	for _, c := range b {
		crc = accumulate(crc, c)
	}
	return accumulate(crc, extra)
}

func accumulate(crc uint16, b byte) uint16 {
	t := b ^ byte(crc)
	t ^= t << 4
	return crc>>8 ^ uint16(t)<<8 ^ uint16(t)<<3 ^ uint16(t)>>4
}

// Scan calls frame for each well-formed frame in datagram, in order, and bad for each run
// of bytes that is not one (then it resumes at the next byte that could start a frame), so
// a damaged frame costs only itself. It allocates nothing.
func Scan(datagram []byte, frame func(f Frame), bad func(err error)) {
	for len(datagram) > 0 {
		f, rest, err := Next(datagram)
		if err == nil {
			frame(f)
			datagram = rest
			continue
		}
		bad(err)
		datagram = datagram[1:]
		for len(datagram) > 0 && datagram[0] != MagicV1 && datagram[0] != MagicV2 {
			datagram = datagram[1:]
		}
	}
}

// AppendFrame appends a MAVLink 2 frame (unsigned, payload trimmed of trailing zero bytes
// as the protocol asks) for message msgID with the given CRC_EXTRA, from system sysID and
// component compID with sequence number seq. The tunnel uses it to speak in its own name
// (a denied command's acknowledgement, radio status) to a ground station, never to an
// autopilot.
func AppendFrame(dst []byte, seq, sysID, compID uint8, msgID uint32, payload []byte) []byte {
	for len(payload) > 1 && payload[len(payload)-1] == 0 {
		payload = payload[:len(payload)-1]
	}
	start := len(dst)
	dst = append(dst, MagicV2, byte(len(payload)), 0, 0, seq, sysID, compID, byte(msgID), byte(msgID>>8), byte(msgID>>16))
	dst = append(dst, payload...)
	extra := crcExtra[msgID]
	return binary.LittleEndian.AppendUint16(dst, checksum(dst[start+1:], extra))
}
