package chat

import (
	"sync"
	"sync/atomic"
)

// hubStats are the hub's counters; the hot path pays an atomic add.
type hubStats struct {
	published       atomic.Uint64
	dms             atomic.Uint64
	rateLimited     atomic.Uint64
	presenceChanges atomic.Uint64
	presenceSent    atomic.Uint64
	errMu           sync.Mutex
	errors          map[string]uint64
}

func (s *hubStats) countError(code string) {
	s.errMu.Lock()
	if s.errors == nil {
		s.errors = make(map[string]uint64)
	}
	s.errors[code]++
	s.errMu.Unlock()
}

// Stats is a snapshot of a Hub's counters.
type Stats struct {
	Rooms           int               // rooms open now
	Published       uint64            // room messages published
	DMs             uint64            // direct messages sent
	RateLimited     uint64            // requests refused by the rate limit
	PresenceChanges uint64            // joins, leaves and renames
	PresenceSent    uint64            // presence messages sent (each to a whole room)
	Errors          map[string]uint64 // errors sent, by code
}

// Stats returns a snapshot of the hub's counters.
func (h *Hub) Stats() Stats {
	st := Stats{
		Published:       h.stats.published.Load(),
		DMs:             h.stats.dms.Load(),
		RateLimited:     h.stats.rateLimited.Load(),
		PresenceChanges: h.stats.presenceChanges.Load(),
		PresenceSent:    h.stats.presenceSent.Load(),
		Errors:          make(map[string]uint64),
	}
	h.rooms.Range(func(any, any) bool { st.Rooms++; return true })
	h.stats.errMu.Lock()
	for k, v := range h.stats.errors {
		st.Errors[k] = v
	}
	h.stats.errMu.Unlock()
	return st
}
