package chat

import (
	"net/netip"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/netkey"
)

// Room creation is budgeted per address (an IPv4 address, an IPv6 /56: netkey)
// and per network (an IPv4 /24, an IPv6 /48), not per connection: a
// client that reconnected got a fresh budget, so one address could make
// about 200 rooms a second and, at MaxRoomsTotal, evict every quiet
// room's history. An address may make RoomCreateRate rooms a minute; its
// network networkCreateShare times as many.
const networkCreateShare = 4

// creatorKey is who a room is made by, for budgets and eviction: an
// address (netkey.Of), or the zero Prefix for the server's own rooms.
type creatorKey = netip.Prefix

// creators holds the budgets and live room counts of addresses and
// networks. Entries live while they have live rooms or an unspent
// budget; sweep drops the rest.
type creators struct {
	mu sync.Mutex
	m  map[netip.Prefix]*creator
}

type creator struct {
	tokens float64 // creations left, refilled at rate a minute
	at     int64   // unix ns of the last refill
	rooms  int     // live rooms made by this address (address keys only)
}

// refill brings c's tokens up to now at rate a minute, at most rate.
func (c *creator) refill(rate float64, now int64) {
	c.tokens = min(rate, c.tokens+float64(now-c.at)/float64(time.Minute)*rate)
	c.at = now
}

func (cs *creators) get(k netip.Prefix, rate float64, now int64) *creator {
	c := cs.m[k]
	if c == nil {
		c = &creator{tokens: rate, at: now}
		if cs.m == nil {
			cs.m = make(map[netip.Prefix]*creator)
		}
		cs.m[k] = c
	}
	c.refill(rate, now)
	return c
}

// take spends a creation of addr's and of network's, or reports which
// budget is spent: "address" or "network".
func (cs *creators) take(addr creatorKey, rate float64, now time.Time) (ok bool, spent string) {
	network, t := netkey.Network(addr), now.UnixNano()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	a := cs.get(addr, rate, t)
	if a.tokens < 1 {
		return false, "address"
	}
	n := cs.get(network, rate*networkCreateShare, t)
	if n.tokens < 1 {
		return false, "network"
	}
	a.tokens--
	n.tokens--
	return true, ""
}

// give returns a creation taken for a room that could not be made.
func (cs *creators) give(addr creatorKey) {
	network := netkey.Network(addr)
	cs.mu.Lock()
	if a := cs.m[addr]; a != nil {
		a.tokens++
	}
	if n := cs.m[network]; n != nil {
		n.tokens++
	}
	cs.mu.Unlock()
}

// made counts a live room of k's; gone uncounts it.
func (cs *creators) made(k creatorKey) { cs.add(k, 1) }
func (cs *creators) gone(k creatorKey) { cs.add(k, -1) }

func (cs *creators) add(k creatorKey, n int) {
	if !k.IsValid() {
		return
	}
	cs.mu.Lock()
	c := cs.m[k]
	if c == nil {
		c = &creator{at: time.Now().UnixNano()} // its budget was swept: it refills from 0
		if cs.m == nil {
			cs.m = make(map[netip.Prefix]*creator)
		}
		cs.m[k] = c
	}
	c.rooms += n
	cs.mu.Unlock()
}

// roomsOf returns how many live rooms k made.
func (cs *creators) roomsOf(k creatorKey) int {
	if !k.IsValid() {
		return 0
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if c := cs.m[k]; c != nil {
		return c.rooms
	}
	return 0
}

// sweep drops the entries with no live room and a full budget.
func (cs *creators) sweep(rate float64, now time.Time) {
	t := now.UnixNano()
	cs.mu.Lock()
	for k, c := range cs.m {
		r := rate
		if netkey.IsNetwork(k) {
			r *= networkCreateShare
		}
		if c.refill(r, t); c.rooms <= 0 && c.tokens >= r {
			delete(cs.m, k)
		}
	}
	cs.mu.Unlock()
}

// mayCreate takes a room creation for c from its address's and network's
// budgets. It returns the room's creator key (zero when c's address is
// unknown: it left meanwhile), and which budget is spent, if one is.
func (h *Hub) mayCreate(c *client, now time.Time) (creatorKey, string) {
	ap, err := h.ep.Addr(c.id)
	if err != nil {
		return creatorKey{}, ""
	}
	addr, ok := netkey.OfAddr(ap)
	if !ok || h.cfg.RoomCreateRate < 0 {
		return addr, ""
	}
	if ok, spent := h.creators.take(addr, h.cfg.RoomCreateRate, now); !ok {
		return addr, spent
	}
	return addr, ""
}

// refund gives back the creation of by's (zero: the server's) for a room
// that could not be made.
func (h *Hub) refund(by creatorKey) {
	if by.IsValid() && h.cfg.RoomCreateRate >= 0 {
		h.creators.give(by)
	}
}

// createLimitError is a creation refused for its address's or its
// network's budget; it Is errCreateLimit.
type createLimitError struct{ spent string }

func (e *createLimitError) Error() string        { return errCreateLimit.Error() + " (" + e.spent + ")" }
func (e *createLimitError) Is(target error) bool { return target == errCreateLimit }
