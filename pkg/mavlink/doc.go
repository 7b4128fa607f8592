// Package mavlink is what the dronelink tunnel needs to know about MAVLink: where frames
// begin and end in a datagram, whether a frame is well formed, who may send which message,
// and how to pack many small frames into one datagram.
//
// The tunnel carries MAVLink between a ground control station and an autopilot inside a
// dronelink session (package app's frames message). It never changes a frame: MAVLink 1
// and 2 frames, signed MAVLink 2 frames included, pass byte for byte. It parses them only
// to drop malformed ones (length, flags, and the checksum of every message id in the
// minimal, common and ardupilotmega definitions), to keep an observer's frames to the
// read-only messages (ObserverMay), and to cut datagrams at frame boundaries.
//
// Why parse at all, when mavlink-router and WFB-ng pass bytes through: a pilot's link may
// change the vehicle and an observer's must not, and only a parsed message id tells which
// is which. An autopilot that trusts a ground station's heartbeat as proof that its
// pilot's link is alive must not get an observer's heartbeat either.
package mavlink
