package api

import (
	"net/netip"
	"testing"
	"time"
)

// TestKeyGuardBounded: failures from more addresses than the guard holds
// neither grow it past maxKeyFailers nor cost a scan each; an address it
// has no room for is throttled, and room comes back once budgets refill.
func TestKeyGuardBounded(t *testing.T) {
	var g keyGuard
	now := time.Now()
	addr := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	for i := range maxKeyFailers {
		g.failed(addr(i), now)
	}
	extra := addr(maxKeyFailers)
	if w := g.wait(extra, now); w != 0 {
		t.Fatalf("a new address before the guard was found full: throttled %v", w)
	}
	g.failed(extra, now) // nothing has refilled: no room
	if len(g.m) != maxKeyFailers {
		t.Fatalf("%d addresses remembered, want at most %d", len(g.m), maxKeyFailers)
	}
	if w := g.wait(addr(maxKeyFailers+1), now); w == 0 {
		t.Fatal("an address the full guard cannot count was not throttled")
	}
	sweptAt := g.sweptAt
	g.failed(addr(maxKeyFailers+2), now.Add(100*time.Millisecond)) // within the second: no second scan
	if g.sweptAt != sweptAt {
		t.Fatal("the full guard was scanned twice within a second")
	}
	later := now.Add(time.Minute) // every budget refilled: the sweep makes room
	g.failed(extra, later)
	if len(g.m) != 1 || g.wait(extra, later) != 0 {
		t.Fatalf("after the budgets refilled: %d remembered, extra throttled %v", len(g.m), g.wait(extra, later))
	}
}
