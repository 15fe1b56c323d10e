package engine

import (
	"net/netip"
	"sync"
	"time"
)

// addrLimits enforces Config.MaxConnectionsPerAddr and
// Config.ConnectRatePerAddr. An address is an IPv4 address, or an IPv6 /56
// (what one customer usually gets). Entries live while the address has
// clients or an unspent rate debt; the ticker sweeps the rest.
type addrLimits struct {
	maxConns int     // <= 0: no limit
	rate     float64 // new connections per second; <= 0: no limit

	mu    sync.Mutex
	addrs map[netip.Addr]*addrState
}

type addrState struct {
	conns  int
	tokens float64 // connection-rate bucket, at most rate (one second's worth)
	last   time.Time
}

func newAddrLimits(maxConns int, rate float64) *addrLimits {
	return &addrLimits{maxConns: maxConns, rate: rate, addrs: make(map[netip.Addr]*addrState)}
}

func (l *addrLimits) enabled() bool { return l.maxConns > 0 || l.rate > 0 }

// key maps a remote address ("ip:port") to its limit key.
func addrKey(remote string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}, false
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(56)
		a = p.Addr()
	}
	return a, true
}

// admit takes a connection slot for remote, or reports why not: "count"
// (too many open) or "rate" (too many new ones per second).
func (l *addrLimits) admit(remote string, now time.Time) (ok bool, why string) {
	if !l.enabled() {
		return true, ""
	}
	a, valid := addrKey(remote)
	if !valid {
		return true, ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.addrs[a]
	if st == nil {
		st = &addrState{tokens: l.rate, last: now}
		l.addrs[a] = st
	}
	if l.maxConns > 0 && st.conns >= l.maxConns {
		return false, "count"
	}
	if l.rate > 0 {
		st.tokens = min(l.rate, st.tokens+now.Sub(st.last).Seconds()*l.rate)
		st.last = now
		if st.tokens < 1 {
			return false, "rate"
		}
		st.tokens--
	}
	st.conns++
	return true, ""
}

// release gives back remote's slot.
func (l *addrLimits) release(remote string) {
	if !l.enabled() {
		return
	}
	if a, ok := addrKey(remote); ok {
		l.mu.Lock()
		if st := l.addrs[a]; st != nil && st.conns > 0 {
			st.conns--
		}
		l.mu.Unlock()
	}
}

// sweep drops addresses with no client and a full rate bucket.
func (l *addrLimits) sweep(now time.Time) {
	if !l.enabled() {
		return
	}
	l.mu.Lock()
	for a, st := range l.addrs {
		if st.conns == 0 && (l.rate <= 0 || st.tokens+now.Sub(st.last).Seconds()*l.rate >= l.rate) {
			delete(l.addrs, a)
		}
	}
	l.mu.Unlock()
}

// bucket is a per-client token bucket refilled at rate per second, holding
// at most one second's worth. The zero value is full.
type bucket struct {
	used float64 // spent within the current second's worth
	last int64   // unix ns
}

// take spends n tokens at time now (unix ns) and reports whether the
// bucket had them.
func (b *bucket) take(n, rate float64, now int64) bool {
	if b.last != 0 {
		b.used = max(0, b.used-float64(now-b.last)/1e9*rate)
	}
	b.last = now
	if b.used+n > rate {
		return false
	}
	b.used += n
	return true
}
