package chat

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// Presence: who is in a room, on this node and the others, told to the
// members coalesced; typing notices.

// markDirty queues r's presence changes for the next presence message.
// Callers hold r.mu.
func (h *Hub) markDirty(r *room) {
	h.stats.presenceChanges.Add(1)
	if r.dirty {
		return
	}
	r.dirty = true
	h.dirtyMu.Lock()
	h.dirty = append(h.dirty, r)
	h.dirtyMu.Unlock()
}

// presenceLoop sends coalesced presence messages every PresenceInterval and
// removes rooms that have been empty for HistoryTTL (a walk over the rooms
// under their own locks: cheap next to the presence it sends).
func (h *Hub) presenceLoop() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.PresenceInterval)
	defer t.Stop()
	var batch []*room
	var lastSweep time.Time
	for {
		select {
		case <-h.ctx.Done():
			return
		case now := <-t.C:
			h.dirtyMu.Lock()
			batch, h.dirty = h.dirty, batch[:0]
			h.dirtyMu.Unlock()
			for i, r := range batch {
				if !h.flushPresence(r, now) {
					h.requeue(r) // a large room's count waits for LargeRoomCounts
				}
				batch[i] = nil
			}
			h.flushAllReactions()
			h.expire(now)
			if now.Sub(lastSweep) >= time.Second {
				lastSweep = now
				h.sweep(now)
				h.sweepRules(now)
				h.creators.sweep(h.cfg.RoomCreateRate, now)
			}
		}
	}
}

// requeue puts r back on the dirty list.
func (h *Hub) requeue(r *room) {
	h.dirtyMu.Lock()
	h.dirty = append(h.dirty, r)
	h.dirtyMu.Unlock()
}

// presenceMaxBackoff caps how far a room that keeps changing stretches
// its presence interval: each presence message that follows the previous
// one at the first chance doubles the room's interval, up to this many
// PresenceIntervals; a quiet interval resets it. In a join storm (100,000
// clients into 1,000 rooms of 100) a message per room every 250 ms was
// most of the servers' writes.
const presenceMaxBackoff = 8

// flushPresence sends r's presence changes as one message to its members
// and tells the other nodes this node's own changes. It reports false when
// the room must wait (r stays dirty): a large room's count, or a busy
// room's stretched interval.
func (h *Hub) flushPresence(r *room, now time.Time) bool {
	done := h.flushPresenceNow(r, now)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.leaving) > 0 {
		r.dirty = true // looked at again next time: who is gone past the grace is told
		return false
	}
	return done
}

// flushPresenceNow is flushPresence's work: the members gone past
// PresenceGrace are told as left.
func (h *Hub) flushPresenceNow(r *room, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for nick, at := range r.leaving {
		if now.Sub(at) >= h.cfg.PresenceGrace {
			r.left = append(r.left, nick)
			delete(r.leaving, nick)
		}
	}
	total, local := r.count(), r.local()
	large := total > h.cfg.LargeRoom
	if large && now.Sub(r.lastSent) < h.cfg.LargeRoomCounts || !large && now.Before(r.nextPresence) {
		return false
	}
	r.dirty = false
	if h.node != "" {
		h.publishPresence(r, local, large)
	}
	p := protocol.Presence{Type: protocol.EventPresence, Room: r.name, Count: total}
	if !large {
		p.Joined, p.Left, p.Renamed = concat(r.joined, r.rjoined), concat(r.left, r.rleft), concat(r.renamed, r.rrenamed)
	} else if total == r.lastCount {
		p.Count = -1 // nothing to tell a large room
	}
	r.joined, r.left, r.renamed, r.rjoined, r.rleft, r.rrenamed = nil, nil, nil, nil, nil, nil
	if p.Count <= 0 {
		return true
	}
	interval := h.cfg.PresenceInterval
	if since := now.Sub(r.lastSent); since <= interval*time.Duration(r.backoff+1) {
		r.backoff = min(max(2*r.backoff, 2), presenceMaxBackoff) // sending at every chance: stretch
	} else {
		r.backoff = 1
	}
	r.nextPresence = now.Add(interval*time.Duration(r.backoff) - interval/2) // the loop ticks every interval
	r.lastCount, r.lastSent = p.Count, now
	b, err := json.Marshal(p)
	if err != nil {
		h.log.Error("encoding presence", "err", err)
		return true
	}
	_, _ = r.group.Send(engine.Text, b)
	h.stats.presenceSent.Add(1)
	return true
}

// nodePresence is one node's presence news for a room, as the other nodes
// receive it.
type nodePresence struct {
	Count     int                `json:"count"`                // the node's members in the room
	CountOnly bool               `json:"count_only,omitempty"` // a large room: the node's nicks are not told
	Full      bool               `json:"full,omitempty"`       // Joined lists all the node's members
	Want      bool               `json:"want,omitempty"`       // the sender asks for every node's full list
	Joined    []string           `json:"joined,omitempty"`
	Left      []string           `json:"left,omitempty"`
	Renamed   []protocol.Renamed `json:"renamed,omitempty"`
}

// maxPresenceNames bounds the names of one node's presence news (a full
// list is at most LargeRoom names; anything longer is hostile).
const maxPresenceNames = 10000

// check refuses presence news no node could have sent.
func (np *nodePresence) check() error {
	if np.Count < 0 || len(np.Joined)+len(np.Left)+len(np.Renamed) > maxPresenceNames {
		return fmt.Errorf("count %d with %d names", np.Count, len(np.Joined)+len(np.Left)+len(np.Renamed))
	}
	for _, l := range [][]string{np.Joined, np.Left} {
		for _, n := range l {
			if !isNick(n) {
				return fmt.Errorf("bad nick %q", n)
			}
		}
	}
	for _, rn := range np.Renamed {
		if !isNick(rn.From) || !isNick(rn.To) {
			return fmt.Errorf("bad rename %q -> %q", rn.From, rn.To)
		}
	}
	return nil
}

// isNick reports whether s is a nick as this server shows one.
func isNick(s string) bool {
	shown, err := normalizeNick(s)
	return err == nil && shown == s
}

// publishPresence tells the other nodes what changed here in r, if
// anything did. Callers hold r.mu.
func (h *Hub) publishPresence(r *room, local int, large bool) {
	np := nodePresence{Count: local}
	if !large {
		// Lists of the others' members that are not known are asked for
		// once; the answers are full lists.
		for _, rm := range r.remote {
			if rm.nicks == nil && !r.asked {
				np.Want, r.asked = true, true
			}
		}
	}
	switch {
	case large:
		np.CountOnly = true
	case r.sendFull:
		np.Full = true
		np.Joined = r.localNames()
	default:
		np.Joined, np.Left, np.Renamed = r.joined, r.left, r.renamed
	}
	if !np.Want && !np.Full && local == r.lastLocal && len(np.Joined)+len(np.Left)+len(np.Renamed) == 0 {
		return // nothing new here
	}
	r.sendFull, r.lastLocal = false, local
	b, err := json.Marshal(np)
	if err == nil {
		err = h.presence.PublishPresence(r.name, b)
	}
	if err != nil && h.brokerLog.allow(time.Now()) {
		h.log.Warn("publishing presence", "room", r.name, "err", err)
	}
}

// HandlePresence implements BrokerHandler: another node's presence news
// for a room joins this node's next presence message.
func (h *Hub) HandlePresence(roomName, node string, data []byte) {
	var np nodePresence
	err := decodeStrict(data, &np)
	if err == nil {
		err = np.check()
	}
	if err != nil {
		h.dropped("presence", fmt.Errorf("room %q, node %q: %w", roomName, node, err))
		return
	}
	r := h.lockRoom(roomName)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	if r.remote == nil {
		r.remote = make(map[string]*remoteMembers)
	}
	rm := r.remote[node]
	if rm == nil {
		rm = &remoteMembers{}
		r.remote[node] = rm
	}
	rm.count = np.Count
	switch {
	case np.CountOnly:
		rm.nicks = nil
	case np.Full:
		full := make(map[string]struct{}, len(np.Joined))
		for _, n := range np.Joined {
			full[n] = struct{}{}
			if _, known := rm.nicks[n]; !known {
				r.rjoined = append(r.rjoined, n)
			}
		}
		for n := range rm.nicks {
			if _, still := full[n]; !still {
				r.rleft = append(r.rleft, n)
			}
		}
		rm.nicks = full
		r.asked = false
	default:
		r.rjoined = append(r.rjoined, np.Joined...)
		r.rleft = append(r.rleft, np.Left...)
		r.rrenamed = append(r.rrenamed, np.Renamed...)
		if rm.nicks != nil {
			for _, n := range np.Joined {
				rm.nicks[n] = struct{}{}
			}
			for _, n := range np.Left {
				delete(rm.nicks, n)
			}
			for _, rn := range np.Renamed {
				delete(rm.nicks, rn.From)
				rm.nicks[rn.To] = struct{}{}
			}
		}
	}
	if np.Want {
		r.sendFull = true
	}
	if rm.count == 0 {
		delete(r.remote, node)
	}
	h.stats.remotePresence.Add(1)
	h.markDirty(r)
}

// HandleNodeGone implements BrokerHandler: the node's members leave every
// room.
func (h *Hub) HandleNodeGone(node string) {
	h.log.Info("a node left the cluster", "peer", node)
	h.rooms.Range(func(_, v any) bool {
		r := v.(*room)
		r.mu.Lock()
		if rm := r.remote[node]; rm != nil {
			for n := range rm.nicks {
				r.rleft = append(r.rleft, n)
			}
			delete(r.remote, node)
			h.markDirty(r)
		}
		r.mu.Unlock()
		return true
	})
}

func concat[T any](a, b []T) []T {
	if len(b) == 0 {
		return a
	}
	return append(a[:len(a):len(a)], b...)
}

func (h *Hub) typing(c *client, req *protocol.Request) {
	if req.To != "" {
		h.typingDM(c, req)
		return
	}
	r := c.room(req.Room)
	if r == nil {
		h.fail(c, req, protocol.CodeNotInRoom, fmt.Sprintf("not in room %q", req.Room))
		return
	}
	if code, msg := h.maySay(c, r.name); code != "" {
		h.fail(c, req, code, msg)
		return
	}
	now := time.Now().UnixNano()
	if now-c.lastTyping < int64(time.Second) {
		return // at most one typing notice per second
	}
	c.lastTyping = now
	b, _ := json.Marshal(protocol.Typing{Type: protocol.EventTyping, Room: r.name, Nick: c.nick})
	_, _ = r.group.Send(engine.Text, b, c.id)
}
