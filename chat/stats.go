package chat

import (
	"sync"
	"sync/atomic"

	"github.com/parleyhq/parley/protocol"
)

// hubStats are the hub's counters; the hot path pays an atomic add.
type hubStats struct {
	published       atomic.Uint64
	publishFailed   atomic.Uint64
	received        atomic.Uint64
	resets          atomic.Uint64
	remotePresence  atomic.Uint64
	dms             atomic.Uint64
	rateLimited     atomic.Uint64
	presenceChanges atomic.Uint64
	presenceSent    atomic.Uint64
	reads           atomic.Uint64
	readsFailed     atomic.Uint64
	readsRefused    atomic.Uint64
	notified        atomic.Uint64
	notesRead       atomic.Uint64
	notesDropped    atomic.Uint64
	reactionFrames  atomic.Uint64
	errMu           sync.Mutex
	errors          map[string]uint64
	refused         map[string]uint64 // handshakes, by reason
	dropped         map[string]uint64 // messages from the broker, by kind
}

func (s *hubStats) countRefused(reason string) {
	s.errMu.Lock()
	if s.refused == nil {
		s.refused = make(map[string]uint64)
	}
	s.refused[reason]++
	s.errMu.Unlock()
}

func (s *hubStats) countDropped(kind string) {
	s.errMu.Lock()
	if s.dropped == nil {
		s.dropped = make(map[string]uint64)
	}
	s.dropped[kind]++
	s.errMu.Unlock()
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
	Members         int               // room memberships now (a client in two rooms counts twice)
	Published       uint64            // room messages this hub published to the broker
	PublishFailed   uint64            // room messages the broker could not take (the sender got not_delivered)
	Received        uint64            // room messages the broker delivered to this hub
	Resets          uint64            // rooms whose log the broker lost and began again
	RemotePresence  uint64            // presence news received from other nodes
	DMs             uint64            // direct messages sent
	RateLimited     uint64            // requests refused by the rate limit
	PresenceChanges uint64            // joins, leaves and renames
	PresenceSent    uint64            // presence messages sent (each to a whole room)
	Reads           uint64            // read marks that moved a user's position (and were pushed to its connections)
	ReadsFailed     uint64            // read-state calls the store failed
	ReadsRefused    uint64            // read-state calls refused because readJobs waited for the store
	Notified        uint64            // unread mentions and DMs handed to the Notifier
	NotesRead       uint64            // mentions and DMs read within NotifyDelay (no notification)
	NotesDropped    uint64            // notifications dropped: MaxPendingNotes waited already
	ReactionFrames  uint64            // reactions events sent (each to a whole room, for all the reactions since the last)
	Errors          map[string]uint64 // errors sent, by code (every code, 0 if none)
	Users           int               // signed-in users connected here (each counted once)
	Refused         map[string]uint64 // handshakes refused, by reason (every Refused* reason, 0 if none)
	// Dropped counts messages from the broker that were refused (they did
	// not decode strictly, or held what a client could not have sent), by
	// kind: message, presence, direct, control, rule.
	Dropped map[string]uint64
}

// droppedKinds are the kinds of Stats.Dropped.
var droppedKinds = []string{"message", "presence", "direct", "control", "rule"}

// Stats returns a snapshot of the hub's counters.
func (h *Hub) Stats() Stats {
	st := Stats{
		Published:       h.stats.published.Load(),
		PublishFailed:   h.stats.publishFailed.Load(),
		Received:        h.stats.received.Load(),
		Resets:          h.stats.resets.Load(),
		RemotePresence:  h.stats.remotePresence.Load(),
		DMs:             h.stats.dms.Load(),
		RateLimited:     h.stats.rateLimited.Load(),
		PresenceChanges: h.stats.presenceChanges.Load(),
		PresenceSent:    h.stats.presenceSent.Load(),
		Reads:           h.stats.reads.Load(),
		ReadsFailed:     h.stats.readsFailed.Load(),
		ReadsRefused:    h.stats.readsRefused.Load(),
		Notified:        h.stats.notified.Load(),
		NotesRead:       h.stats.notesRead.Load(),
		NotesDropped:    h.stats.notesDropped.Load(),
		ReactionFrames:  h.stats.reactionFrames.Load(),
		Errors:          make(map[string]uint64),
		Refused:         make(map[string]uint64),
		Dropped:         make(map[string]uint64),
	}
	h.users.mu.Lock()
	st.Users = len(h.users.m)
	h.users.mu.Unlock()
	h.rooms.Range(func(_, v any) bool {
		r := v.(*room)
		r.mu.Lock()
		st.Members += len(r.members)
		r.mu.Unlock()
		st.Rooms++
		return true
	})
	for _, code := range protocol.Codes() {
		st.Errors[string(code)] = 0
	}
	for _, r := range refusedReasons {
		st.Refused[r] = 0
	}
	for _, k := range droppedKinds {
		st.Dropped[k] = 0
	}
	h.stats.errMu.Lock()
	for k, v := range h.stats.errors {
		st.Errors[k] = v
	}
	for k, v := range h.stats.refused {
		st.Refused[k] = v
	}
	for k, v := range h.stats.dropped {
		st.Dropped[k] = v
	}
	h.stats.errMu.Unlock()
	return st
}
