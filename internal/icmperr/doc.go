// Package icmperr reads the ICMP errors that Linux queues on a UDP socket with IP_RECVERR
// (IPV6_RECVERR) set (see ip(7), ipv6(7)).
//
// Without that option an unconnected UDP socket never hears of an ICMP error, and a
// connected one hears of it as a bare errno on its next read or write. With it, the kernel
// queues every ICMP error about a datagram the socket sent on the socket's error queue,
// whether the socket is connected or not, and also reports it as a pending error: the next
// read or write fails with the error's errno (ECONNREFUSED for a port unreachable), and
// the socket polls readable with POLLERR until the queue is drained. Each queue entry,
// read with recvmsg(MSG_ERRQUEUE), gives the failed datagram's destination (msg_name), a
// struct sock_extended_err (errno, origin, ICMP type and code) followed by the address of
// the host that sent the ICMP error (SO_EE_OFFENDER), and the start of the failed
// datagram's payload.
//
// The package has content on Linux only.
package icmperr
