package mavlink

import "encoding/binary"

// Message ids and commands the role policy names (common.xml).
const (
	MsgHeartbeat   = 0
	MsgCommandInt  = 75
	MsgCommandLong = 76
	MsgCommandAck  = 77
	MsgRadioStatus = 109

	// commandOffset is where the 16-bit command number sits in the payload of COMMAND_LONG
	// and COMMAND_INT (after seven, respectively four plus three, 4-byte fields).
	commandOffset = 28
)

// observerMessages are the read-only messages an observer may send: requests to read
// parameters, missions, logs, fences and rally points, pings and time sync. Everything
// else changes the vehicle or may (MAVLINK.md lists them); unknown ids are denied too.
// HEARTBEAT is not here: an autopilot takes a ground station's heartbeat as proof that its
// pilot's link is alive, and an observer's must not hide a lost-link failsafe.
var observerMessages = map[uint32]bool{
	4:   true, // PING
	20:  true, // PARAM_REQUEST_READ
	21:  true, // PARAM_REQUEST_LIST
	40:  true, // MISSION_REQUEST
	43:  true, // MISSION_REQUEST_LIST
	47:  true, // MISSION_ACK
	51:  true, // MISSION_REQUEST_INT
	111: true, // TIMESYNC
	117: true, // LOG_REQUEST_LIST
	119: true, // LOG_REQUEST_DATA
	122: true, // LOG_REQUEST_END
	161: true, // FENCE_FETCH_POINT
	176: true, // RALLY_FETCH_POINT
	320: true, // PARAM_EXT_REQUEST_READ
	321: true, // PARAM_EXT_REQUEST_LIST
}

// observerCommands are the COMMAND_LONG / COMMAND_INT commands that only ask for data.
var observerCommands = map[uint16]bool{
	410: true, // MAV_CMD_GET_HOME_POSITION
	512: true, // MAV_CMD_REQUEST_MESSAGE
	519: true, // MAV_CMD_REQUEST_PROTOCOL_VERSION
	520: true, // MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES
}

// ObserverMay reports whether an observer's frame may reach the autopilot: a read-only
// message, or a command that only requests data. The frame must be well formed and its
// checksum checked (f.Checked): a frame whose message this package does not know is denied.
func ObserverMay(f *Frame) bool {
	if !f.Checked {
		return false
	}
	if f.MsgID == MsgCommandLong || f.MsgID == MsgCommandInt {
		return observerCommands[Command(f)]
	}
	return observerMessages[f.MsgID]
}

// Command is the command number of a COMMAND_LONG or COMMAND_INT frame (0 for any other).
// MAVLink 2 trims trailing zero bytes, so a missing byte counts as zero.
func Command(f *Frame) uint16 {
	if f.MsgID != MsgCommandLong && f.MsgID != MsgCommandInt {
		return 0
	}
	var b [2]byte
	if len(f.Payload) > commandOffset {
		copy(b[:], f.Payload[commandOffset:])
	}
	return binary.LittleEndian.Uint16(b[:])
}
