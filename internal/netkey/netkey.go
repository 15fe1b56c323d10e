// Package netkey says which clients count as one for the limits of the
// engine (connections), the chat (room budgets, message ids) and the
// server API (wrong keys): an address is an IPv4 address or an IPv6 /56
// (what one customer usually gets), a network an IPv4 /24 or an IPv6 /48.
// Limits per address alone scale with the addresses an attacker holds;
// a network's are shared by all of its addresses.
package netkey

import "net/netip"

// Of returns the address key of remote ("ip:port", as net/http and nbio
// give it), or false if remote is not an IP address and port.
func Of(remote string) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Prefix{}, false
	}
	return OfAddr(ap)
}

// OfAddr is Of for an address already parsed; false if it is not valid.
func OfAddr(ap netip.AddrPort) (netip.Prefix, bool) {
	if !ap.Addr().IsValid() {
		return netip.Prefix{}, false
	}
	a := ap.Addr().Unmap()
	bits := 56
	if a.Is4() {
		bits = 32
	}
	p, _ := a.Prefix(bits)
	return p, true
}

// Network returns the network of an address key.
func Network(k netip.Prefix) netip.Prefix {
	n, _ := k.Addr().Prefix(networkBits(k.Addr()))
	return n
}

// IsNetwork tells a network key from an address key.
func IsNetwork(k netip.Prefix) bool { return k.IsValid() && k.Bits() == networkBits(k.Addr()) }

func networkBits(a netip.Addr) int {
	if a.Is4() {
		return 24
	}
	return 48
}
