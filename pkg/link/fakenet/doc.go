// Package fakenet is an in-memory datagram network for testing and benchmarking the
// dronelink protocol engine without real sockets.
//
// A drone link runs over a hostile radio: datagrams are lost, reordered, duplicated,
// delayed and corrupted, and an attacker may inject, replay or rewrite them. Exercising
// the engine against real UDP on loopback shows none of that, and impairing a real
// network is slow and non-deterministic. fakenet instead gives every test its own
// [Network] whose impairments ([Config]) are decided by a seeded PCG generator
// (math/rand/v2), so the same seed and the same order of sends yield the same fate for
// every datagram. Tests can change impairments at run time ([Network.SetConfig]), play
// man-in-the-middle ([Network.Intercept]), forge or replay traffic ([Network.Inject]), and
// check what happened ([Network.Stats]).
//
// A [Conn] satisfies the engine's PacketConn interface structurally (ReadFrom, WriteTo,
// LocalAddr, Close), so the engine runs unchanged over a fakenet socket.
//
// Datagram path: WriteTo copies the payload, counts it Sent, passes it to the intercept
// hook (if any), then applies, in this order and per resulting datagram: loss, corruption
// (one random bit), duplication, and per copy: delay + jitter and reordering. Delivery
// never blocks the writer: a full receive queue drops the datagram (QueueFull), an address
// nobody listens on drops it silently (NoListener), as with UDP.
//
// Delayed datagrams and reorder timeouts are run by one scheduler goroutine per Network
// that exists only while such events are pending; [Network.Close] stops it and waits for
// it, so a closed Network leaves no goroutines behind. Datagrams with equal delay on a path
// are delivered in send order.
package fakenet
