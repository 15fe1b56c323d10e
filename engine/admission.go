package engine

import (
	"sync"
	"time"
)

// Admission when the server is full. Limits per address and per network
// (addrLimits) scale with the addresses an attacker holds: 75 addresses
// of 256 idle clients held every slot of 19,000. Two defences do not:
//
//   - Config.ReservedConnections slots are kept for clients the
//     application marks Privileged (signed-in users): guests are refused,
//     or make room, once the rest are taken.
//   - A client that finds no slot takes the one of the oldest guest that
//     never sent a message since its upgrade (silent): that guest is
//     closed with 1013 and dropped once the close frame is out. Only when
//     no silent guest is left is a client refused with 503. An address
//     whose silent guest was closed so may not make room itself for a
//     minute (evictionMemory): idle clients that come back at once do not
//     take each other's slots without end.

// Privileged is implemented by handshake data (what
// Application.OnHandshake returns) of a client that may use the slots kept
// by Config.ReservedConnections and is never dropped to make room: a
// signed-in user, say.
type Privileged interface {
	Privileged() bool
}

func privileged(data any) bool {
	p, ok := data.(Privileged)
	return ok && p.Privileged()
}

// silentGuests are the upgraded clients that are not privileged and have
// sent no message yet, oldest first. Entries are not removed when a client
// speaks or leaves; evictSilent skips them, and push compacts the queue
// once most of it is stale.
type silentGuests struct {
	mu   sync.Mutex
	q    []silentEntry
	head int
}

type silentEntry struct {
	ep *Endpoint
	id ClientID
}

// evictedReason is the close reason of a silent guest dropped to make room.
const evictedReason = ReasonServerFull

// still reports whether e is a client that may be dropped to make room.
func (e silentEntry) still() *conn {
	c := e.ep.lookup(e.id)
	if c == nil || c.msgsIn.Load() > 0 || c.flags.Load(flagClosing) {
		return nil
	}
	return c
}

func (g *silentGuests) push(ep *Endpoint, id ClientID, live int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.q = append(g.q, silentEntry{ep, id})
	if n := len(g.q) - g.head; n > 1024 && int64(n) > 2*live {
		kept := g.q[:0]
		for _, e := range g.q[g.head:] {
			if e.still() != nil {
				kept = append(kept, e)
			}
		}
		clear(g.q[len(kept):])
		g.q, g.head = kept, 0
	}
}

// pop returns the oldest client still silent, or nil.
func (g *silentGuests) pop() *conn {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.head < len(g.q) {
		e := g.q[g.head]
		g.q[g.head] = silentEntry{}
		g.head++
		if c := e.still(); c != nil {
			return c
		}
	}
	g.q, g.head = g.q[:0], 0
	return nil
}

// admit decides whether an upgrade in progress (counted in live since it
// began, so that Shutdown waits for it) keeps its slot, once the
// application has said who the client is: it does under the limit that
// applies to it, or in place of the oldest silent guest, which it closes
// (that one gives its slot back when its socket closes).
func (s *Server) admit(priv bool, remote string) bool {
	max := int64(s.cfg.MaxConnections)
	if max < 0 {
		return true
	}
	limit := max
	if !priv {
		limit -= int64(s.cfg.ReservedConnections)
	}
	if s.live.Load() <= limit {
		return true
	}
	now := time.Now()
	if s.cfg.KeepSilentGuests || !s.limits.mayEvict(remote, now) {
		return false
	}
	if c := s.silent.pop(); c != nil {
		c.evict()
		s.limits.evictedFrom(c.remote(), now)
		s.stats.evicted.Add(1)
		return true
	}
	return false
}

// evict closes a silent guest to make room: our close frame, then the
// socket is dropped as soon as it is written (no reply is awaited, so the
// descriptor comes back at once).
func (c *conn) evict() {
	c.mu.Lock()
	c.peerClosed = true
	c.mu.Unlock()
	c.startClose(StatusTryAgainLater, evictedReason)
}
