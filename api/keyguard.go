package api

import (
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/netkey"
)

// Wrong keys are throttled per address: each address (an IPv4 address, an
// IPv6 /56: netkey) may fail the key check FailedKeyBurst times, then once per
// second (FailedKeyRate); past that its requests get 429 without their
// key being looked at, a right one included, until its budget refills. A
// wrong-key loop on one connection used to get 5,814 answers a second.
const (
	// FailedKeyBurst is how many wrong keys an address may send at once.
	FailedKeyBurst = 10
	// FailedKeyRate is how many more a second it may send after that.
	FailedKeyRate = 1.0
	// maxKeyFailers bounds the addresses remembered (keyGuard.failed).
	maxKeyFailers = 1 << 16
)

// keyGuard counts wrong keys per address.
type keyGuard struct {
	mu       sync.Mutex
	m        map[netip.Prefix]*keyBudget
	sweptAt  time.Time // the last time a full map was swept: at most once a second
	fullTill time.Time // until then, an address it has no room for is throttled
}

type keyBudget struct {
	tokens float64
	last   time.Time
}

// wait returns how long a is throttled for (0: not throttled).
func (g *keyGuard) wait(a netip.Prefix, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.m[a]
	if b == nil {
		if now.Before(g.fullTill) {
			return time.Second // no room to count its failures: no budget either
		}
		return 0
	}
	b.refill(now)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1-b.tokens)/FailedKeyRate)) * time.Second
}

// failed spends one of a's wrong keys. With maxKeyFailers addresses
// remembered, those whose budget has refilled are forgotten (a sweep at
// most once a second: addresses without end must not cost a scan each);
// if that makes no room, a is not remembered, and every address the guard
// has no room for is throttled for a second.
func (g *keyGuard) failed(a netip.Prefix, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.m[a]
	if b == nil {
		if len(g.m) >= maxKeyFailers && now.Sub(g.sweptAt) >= time.Second {
			g.sweptAt = now
			for k, o := range g.m {
				if o.refill(now); o.tokens >= FailedKeyBurst {
					delete(g.m, k)
				}
			}
		}
		if len(g.m) >= maxKeyFailers {
			g.fullTill = now.Add(time.Second)
			return
		}
		if g.m == nil {
			g.m = make(map[netip.Prefix]*keyBudget)
		}
		b = &keyBudget{tokens: FailedKeyBurst, last: now}
		g.m[a] = b
	}
	b.refill(now)
	b.tokens = max(0, b.tokens-1)
}

func (b *keyBudget) refill(now time.Time) {
	b.tokens = min(FailedKeyBurst, b.tokens+now.Sub(b.last).Seconds()*FailedKeyRate)
	b.last = now
}

// admit answers a request that may not be served (a throttled address:
// 429; a wrong key: 401), counted under route, and reports whether the
// request may go on.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, route string) bool {
	a, _ := netkey.Of(r.RemoteAddr) // not an IP (a test's or a socket's): one shared budget
	now := time.Now()
	if d := s.fails.wait(a, now); d > 0 {
		s.count(route, http.StatusTooManyRequests)
		w.Header().Set("Retry-After", strconv.Itoa(int(d/time.Second)))
		writeJSON(w, http.StatusTooManyRequests, errorBody{
			Error: "too many wrong API keys from your address: retry after " + d.String(), Code: "too_many_failures"})
		return false
	}
	if !s.authorized(r) {
		s.fails.failed(a, now)
		s.unauthorized(w, route)
		return false
	}
	return true
}
