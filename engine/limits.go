package engine

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/internal/netkey"
)

// addrLimits enforces Config.MaxConnectionsPerAddr and
// Config.ConnectRatePerAddr on every TCP connection, from accept on: one
// that has not upgraded (an idle socket, a page load) counts against its
// address as much as a WebSocket client. An address is an IPv4 address, or
// an IPv6 /56 (what one customer usually gets). Entries live while the
// address has connections or an unspent rate debt; the ticker sweeps the
// rest.
//
// It also keeps the connections that have not upgraded yet, so that at the
// process's file limit the oldest of them can be dropped to make room.
type addrLimits struct {
	maxConns int     // <= 0: no limit
	maxNet   int     // connections per network (netkey.Network); <= 0: no limit
	rate     float64 // new connections per second; <= 0: no limit

	// open counts the admitted connections not yet released: the
	// listener keeps a spare descriptor only near the file limit.
	open atomic.Int64

	mu      sync.Mutex
	addrs   map[netip.Prefix]*addrState
	nets    map[netip.Prefix]int   // open connections per network, while any
	pending map[string]pendingConn // by remote address: accepted, not upgraded
}

type addrState struct {
	conns   int
	tokens  float64 // connection-rate bucket, at most burst()
	last    time.Time
	evicted time.Time // when one of its silent guests was last closed to make room
}

// evictionMemory is how long an address whose silent guest was closed to
// make room may not make room itself: an attacker whose idle clients come
// back as soon as they are dropped would otherwise take each other's
// slots without end (one address reconnecting at its connection rate
// churned 1,400 upgrades a second against 250 addresses), while a healthy
// client, which speaks, is never closed and keeps the right.
const evictionMemory = time.Minute

// evictedFrom records that a silent guest from remote was closed to make
// room.
func (l *addrLimits) evictedFrom(remote string, now time.Time) {
	a, ok := netkey.Of(remote)
	if !ok || !l.enabled() {
		return
	}
	l.mu.Lock()
	if st := l.addrs[a]; st != nil {
		st.evicted = now
	}
	l.mu.Unlock()
}

// mayEvict reports whether a client from remote may take a silent guest's
// slot: not while one of its own was closed to make room within
// evictionMemory.
func (l *addrLimits) mayEvict(remote string, now time.Time) bool {
	a, ok := netkey.Of(remote)
	if !ok || !l.enabled() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.addrs[a]
	return st == nil || st.evicted.IsZero() || now.Sub(st.evicted) >= evictionMemory
}

// pendingConn is a connection that has not upgraded: nc is nil until
// nbhttp has made its connection (opened).
type pendingConn struct {
	nc net.Conn
	at time.Time
}

func newAddrLimits(maxConns, maxNet int, rate float64) *addrLimits {
	return &addrLimits{maxConns: maxConns, maxNet: maxNet, rate: rate, addrs: make(map[netip.Prefix]*addrState),
		nets: make(map[netip.Prefix]int), pending: make(map[string]pendingConn)}
}

// burst is the connection-rate bucket's size: a second's worth, and at
// least one connection (a rate under one a second admits one every
// 1/rate seconds, not nobody).
func (l *addrLimits) burst() float64 { return max(1, l.rate) }

func (l *addrLimits) enabled() bool { return l.maxConns > 0 || l.maxNet > 0 || l.rate > 0 }

// admit takes a slot for a connection just accepted from remote, or
// reports why not: "count" (too many open from its address), "network"
// (too many open from its network) or "rate" (too many new ones per
// second).
func (l *addrLimits) admit(remote string, now time.Time) (ok bool, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.enabled() {
		if a, valid := netkey.Of(remote); valid {
			st := l.addrs[a]
			if st == nil {
				st = &addrState{tokens: l.burst(), last: now}
				l.addrs[a] = st
			}
			if l.maxConns > 0 && st.conns >= l.maxConns {
				return false, "count"
			}
			n := netkey.Network(a)
			if l.maxNet > 0 && l.nets[n] >= l.maxNet {
				return false, "network"
			}
			if l.rate > 0 {
				st.tokens = min(l.burst(), st.tokens+now.Sub(st.last).Seconds()*l.rate)
				st.last = now
				if st.tokens < 1 {
					return false, "rate"
				}
				st.tokens--
			}
			st.conns++
			l.nets[n]++
		}
	}
	l.pending[remote] = pendingConn{at: now}
	l.open.Add(1)
	return true, ""
}

// opened records nbhttp's connection for remote, so that it can be
// dropped while it has not upgraded.
func (l *addrLimits) opened(remote string, nc net.Conn) {
	l.mu.Lock()
	if p, ok := l.pending[remote]; ok {
		p.nc = nc
		l.pending[remote] = p
	}
	l.mu.Unlock()
}

// upgraded marks remote's connection a WebSocket client: it keeps its
// slot, and is no longer among the first dropped.
func (l *addrLimits) upgraded(remote string) {
	l.mu.Lock()
	delete(l.pending, remote)
	l.mu.Unlock()
}

// release gives back remote's slot; call it once per admitted connection.
func (l *addrLimits) release(remote string) {
	l.open.Add(-1)
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pending, remote)
	if !l.enabled() {
		return
	}
	if a, ok := netkey.Of(remote); ok {
		if st := l.addrs[a]; st != nil && st.conns > 0 {
			st.conns--
			n := netkey.Network(a)
			if l.nets[n]--; l.nets[n] <= 0 {
				delete(l.nets, n)
			}
		}
	}
}

// pendingGrace is how long a new connection has to upgrade before it may
// be dropped to make room: one accepted just now is most likely a client
// in the middle of its handshake.
const pendingGrace = time.Second

// dropOldestPending closes the connection that has waited longest without
// upgrading, if it has waited at least pendingGrace, and reports whether
// there was one.
func (l *addrLimits) dropOldestPending(now time.Time) bool {
	l.mu.Lock()
	var oldest pendingConn
	for _, p := range l.pending {
		if p.nc != nil && now.Sub(p.at) >= pendingGrace && (oldest.nc == nil || p.at.Before(oldest.at)) {
			oldest = p
		}
	}
	l.mu.Unlock()
	if oldest.nc == nil {
		return false
	}
	_ = oldest.nc.Close() // its close hook releases the slot
	return true
}

// sweep drops addresses with no connection and a full rate bucket.
func (l *addrLimits) sweep(now time.Time) {
	if !l.enabled() {
		return
	}
	l.mu.Lock()
	for a, st := range l.addrs {
		if st.conns == 0 && (l.rate <= 0 || st.tokens+now.Sub(st.last).Seconds()*l.rate >= l.burst()) &&
			(st.evicted.IsZero() || now.Sub(st.evicted) >= evictionMemory) {
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

// left returns the tokens the bucket holds at time now (unix ns).
func (b *bucket) left(rate float64, now int64) float64 {
	if b.last != 0 {
		b.used = max(0, b.used-float64(now-b.last)/1e9*rate)
	}
	b.last = now
	return rate - b.used
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

// rates are the three token buckets a client's input is checked against
// on its poller, under its readMu (MaxMessagesPerSecond,
// MaxPingsPerSecond, MaxBytesPerSecond), with one clock: each is refilled
// whenever one is used. 24 bytes where three buckets took 48. The zero
// value is full.
type rates struct {
	at                 int64   // unix ns of the last refill
	msgs, pings, bytes float32 // spent within the current second's worth
}

// take refills every bucket to now (unix ns), then spends n tokens from
// spent (one of r's fields, whose rate is rate) and reports whether it had
// them.
func (r *rates) take(spent *float32, n, rate float64, cfg *Config, now int64) bool {
	if r.at != 0 {
		dt := float64(now-r.at) / 1e9
		r.msgs = drain(r.msgs, dt*cfg.MaxMessagesPerSecond)
		r.pings = drain(r.pings, dt*cfg.MaxPingsPerSecond)
		r.bytes = drain(r.bytes, dt*cfg.MaxBytesPerSecond)
	}
	r.at = now
	if float64(*spent)+n > rate {
		return false
	}
	*spent += float32(n)
	return true
}

// drain returns used less by, at least 0; a rate that is off (by <= 0)
// leaves it as it is.
func drain(used float32, by float64) float32 {
	if by <= 0 {
		return used
	}
	return float32(max(0, float64(used)-by))
}
