package chat

import (
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/parleyhq/parley/engine"
)

// room is one chat room. Its lock is held while a message takes its
// sequence number, enters the history and is published, so members receive
// messages in sequence order; membership changes hold it too.
type room struct {
	name  string
	group *engine.Group

	mu      sync.Mutex
	removed bool                       // expired; joiners must make a new room
	members map[engine.ClientID]string // id -> nick
	seq     int64                      // the latest message's sequence number
	hist    [][]byte                   // ring of encoded messages
	histN   int                        // messages in the ring
	histAt  int                        // where the next one goes

	// Presence changes since the last presence message.
	joined, left []string
	renamed      []Renamed
	lastCount    int
	lastSent     time.Time // when the last presence message went out

	// A large room's member sample for joiners, encoded, rebuilt at most
	// every LargeRoomCounts: building it per joiner was a third of the
	// server's work in a connect storm.
	sample     json.RawMessage
	sampleAt   time.Time
	dirty      bool
	emptySince time.Time
}

func newRoom(name string, group *engine.Group, historySize int) *room {
	return &room{
		name:    name,
		group:   group,
		members: make(map[engine.ClientID]string),
		hist:    make([][]byte, historySize),
	}
}

// appendHistory stores the encoded message with sequence number r.seq.
// Callers hold r.mu.
func (r *room) appendHistory(b []byte) {
	if len(r.hist) == 0 {
		return
	}
	r.hist[r.histAt] = b
	r.histAt = (r.histAt + 1) % len(r.hist)
	r.histN = min(r.histN+1, len(r.hist))
}

// history returns up to limit stored messages with after < seq < before
// (before 0: no upper bound), oldest first, and whether messages after
// `after` are missing from the store. Callers hold r.mu.
func (r *room) history(after, before int64, limit int) ([]json.RawMessage, bool) {
	oldest := r.seq - int64(r.histN) + 1 // sequence number of the oldest stored message
	lo, hi := max(after+1, oldest), r.seq
	if before > 0 {
		hi = min(hi, before-1)
	}
	gap := after+1 < oldest && after >= 0 && r.seq > after
	if lo > hi || limit <= 0 {
		return nil, gap
	}
	if hi-lo+1 > int64(limit) {
		lo = hi - int64(limit) + 1
	}
	out := make([]json.RawMessage, 0, hi-lo+1)
	for s := lo; s <= hi; s++ {
		i := (r.histAt - int(r.seq-s) - 1 + 2*len(r.hist)) % len(r.hist)
		out = append(out, r.hist[i])
	}
	return out, gap
}

// largeSample returns the cached, encoded member sample of a large room,
// rebuilt when older than every. Callers hold r.mu.
func (r *room) largeSample(n int, every time.Duration, now time.Time) json.RawMessage {
	if r.sample == nil || now.Sub(r.sampleAt) >= every {
		nicks, _ := r.memberSample(n)
		r.sample, _ = json.Marshal(nicks)
		r.sampleAt = now
	}
	return r.sample
}

// memberSample returns up to n members' nicks, sorted, and whether that is
// not everyone. Callers hold r.mu.
func (r *room) memberSample(n int) ([]string, bool) {
	out := make([]string, 0, min(n, len(r.members)))
	for _, nick := range r.members {
		if len(out) == n {
			break
		}
		out = append(out, nick)
	}
	slices.Sort(out)
	return out, len(r.members) > len(out)
}
