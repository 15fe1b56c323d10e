package natsbroker

import (
	"slices"
	"time"
)

// A node learns of a room's messages from the stream's republished copies,
// sent once, over core NATS: one lost there (this node reconnecting while
// it was sent, a route between NATS servers dropped when one died) is
// noticed only when a later one comes, and a room that falls silent would
// miss it for good. So every node says, in its heartbeats, the sequence
// numbers its own messages were stored under, for tailAnnounced after
// each: a node subscribed to one of those rooms that has not seen that
// number fetches what it missed (catchUp). A lost message costs at most a
// few heartbeats; a heartbeat lost with it, the next.

// tailMark is a room's last stored sequence number this node published,
// and when it was acknowledged.
type tailMark struct {
	seq uint64
	at  time.Time
}

// maxTails bounds the rooms one heartbeat names (the most recently
// written are kept); a heartbeat naming more is dropped as malformed.
const maxTails = 256

// tailAnnounced is how many heartbeats a tail is repeated in.
const tailAnnounced = 10

// stored records that room's message was stored under seq. Under o.mu.
func (o *outbox) stored(room string, seq uint64) {
	if t := o.tails[room]; t.seq < seq {
		o.tails[room] = tailMark{seq: seq, at: time.Now()}
	}
}

// recentTails is what a heartbeat says: the tails acknowledged within
// tailAnnounced heartbeats (older ones are forgotten), at most maxTails,
// leaving out those younger than half a heartbeat, whose republished
// copy is still on its way.
func (o *outbox) recentTails(now time.Time, heartbeat time.Duration) map[string]uint64 {
	type named struct {
		room string
		tailMark
	}
	o.mu.Lock()
	var recent []named
	for room, t := range o.tails {
		switch age := now.Sub(t.at); {
		case age > tailAnnounced*heartbeat:
			delete(o.tails, room)
		case age >= heartbeat/2:
			recent = append(recent, named{room, t})
		}
	}
	o.mu.Unlock()
	if len(recent) > maxTails {
		slices.SortFunc(recent, func(a, b named) int { return b.at.Compare(a.at) })
		recent = recent[:maxTails]
	}
	if len(recent) == 0 {
		return nil
	}
	out := make(map[string]uint64, len(recent))
	for _, t := range recent {
		out[t.room] = t.seq
	}
	return out
}

// tailHeard takes a room's tail from another node's heartbeat (or, seq
// math.MaxUint64, an audit after a reconnect: auditAfterReopen): if this
// node is subscribed to the room, up to date with its log (not resyncing,
// not repairing) and has not seen seq yet, it asks the stream where it
// ends and fetches what it missed up to there. A heartbeat is a claim,
// not a fact (a sender's tail may be of the room's log before a reset, or
// hostile): only what the stream holds is waited for. Dispatcher only.
func (b *Broker) tailHeard(room string, seq uint64) {
	b.mu.RLock()
	rs := b.rooms[room]
	b.mu.RUnlock()
	if rs == nil || rs.repairing || rs.checking {
		return
	}
	rs.mu.Lock()
	behind := rs.ready && rs.last < seq
	s, epoch := rs.stream, rs.epoch
	rs.mu.Unlock()
	if !behind || s == nil {
		return
	}
	rs.checking = b.spawn(func() {
		// At most maxOpens at a time, with the reopenings: after a
		// reconnect every room is audited at once.
		select {
		case b.opens <- struct{}{}:
		case <-b.stop:
			b.later(func() { rs.checking = false })
			return
		}
		ctx, cancel := b.ctx()
		info, err := s.Info(ctx)
		cancel()
		<-b.opens
		b.later(func() {
			rs.checking = false
			if err != nil || info.Created.UnixMilli() != epoch || rs.repairing {
				return // NATS away or the log reset: resync sees to it
			}
			rs.mu.Lock()
			upTo := min(seq, info.State.LastSeq)
			behind := rs.ready && rs.epoch == epoch && rs.last < upTo
			rs.mu.Unlock()
			if behind {
				b.stats.tailRepairs.Add(1)
				b.catchUp(rs, upTo)
			}
		})
	})
}
