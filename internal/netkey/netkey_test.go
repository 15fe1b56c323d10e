package netkey

import (
	"net/netip"
	"testing"
)

func TestKeys(t *testing.T) {
	for _, tc := range []struct{ remote, addr, network string }{
		{"192.0.2.7:1234", "192.0.2.7/32", "192.0.2.0/24"},
		{"[::ffff:192.0.2.7]:1234", "192.0.2.7/32", "192.0.2.0/24"}, // a mapped IPv4 address is IPv4
		{"[2001:db8:1:2ff:3:4:5:6]:443", "2001:db8:1:200::/56", "2001:db8:1::/48"},
	} {
		k, ok := Of(tc.remote)
		if k2, ok2 := OfAddr(netip.MustParseAddrPort(tc.remote)); k2 != k || ok2 != ok {
			t.Errorf("%s: OfAddr %v %v, Of %v %v", tc.remote, k2, ok2, k, ok)
		}
		if !ok || k != netip.MustParsePrefix(tc.addr) || Network(k) != netip.MustParsePrefix(tc.network) ||
			IsNetwork(k) || !IsNetwork(Network(k)) {
			t.Errorf("%s: %v %v, network %v", tc.remote, k, ok, Network(k))
		}
	}
	if _, ok := OfAddr(netip.AddrPort{}); ok {
		t.Error("the zero AddrPort: a key")
	}
	for _, bad := range []string{"", "localhost:80", "192.0.2.7", "@"} {
		if _, ok := Of(bad); ok {
			t.Errorf("%q: a key", bad)
		}
	}
}
