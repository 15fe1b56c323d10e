package chat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// The hub's rooms: making, joining, leaving and removing them, and the
// broker's deliveries of their messages and resets.

// largeRoomSample is the most names a joiner of a room above LargeRoom gets:
// a sample of thousands says no more with 100 names than with 20, and in a
// connect storm into such a room the longer list measurably slowed
// connecting.
const largeRoomSample = 20

// HandleMessage implements BrokerHandler: the message gets its sequence
// number, enters the history and goes to the room's local members, encoded
// once for all of them.
func (h *Hub) HandleMessage(roomName string, seq int64, msg []byte) {
	h.stats.received.Add(1)
	r := h.lockRoom(roomName)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	if r.isLoading() {
		r.holdEarly(seq, msg) // makeRoom takes it once the room's state is in
		return
	}
	h.deliver(r, seq, msg)
}

// deliver puts the room's message number seq in its history and sends it
// to its members. Callers hold r.mu.
func (h *Hub) deliver(r *room, seq int64, msg []byte) {
	roomName := r.name
	if seq <= r.seq {
		return // a message the room's state had already
	}
	r.seq = seq // numbered, even if dropped: the next one follows it
	var p published
	msg, ok := h.sanitize(roomName, msg, &p)
	if !ok {
		return
	}
	if p.React != 0 {
		h.applyReaction(r, seq, &p) // told with the room's next reactions event
		return
	}
	h.flushReactions(r) // the reactions before it come before it
	now := time.Now().UnixNano()
	if (p.Edits != 0 || p.Deletes != 0) && !h.applyEntry(r, seq, &p, now) {
		return
	}
	// The frame is a copy: the encoding is scratch, and the history keeps
	// msg alone (it may share its array with the broker's headers).
	bp := h.scratch.Get().(*[]byte)
	b, _ := r.encode((*bp)[:0], seq, msg)
	_, _ = r.group.Send(engine.Text, b)
	*bp = b
	if cap(b) <= maxScratch {
		h.scratch.Put(bp)
	}
	r.appendHistory(seq, bytes.Clone(msg), now)
	if p.Edits == 0 && p.Deletes == 0 {
		h.noteMentions(r, seq, &p)
	}
}

// maxScratch is the largest encoding buffer the hub keeps for reuse.
const maxScratch = 64 << 10

// HandleReset implements BrokerHandler: the room's log began again (the
// broker lost it); its members are told to count from st.Seq in the new
// epoch.
func (h *Hub) HandleReset(roomName string, st RoomState) {
	r := h.lockRoom(roomName)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	if r.isLoading() {
		r.resetTo, r.early = &st, nil // makeRoom takes it once the room's state is in
		return
	}
	h.load(r, st)
	h.stats.resets.Add(1)
	b, _ := json.Marshal(protocol.Reset{Type: protocol.EventReset, Room: r.name, Epoch: r.epoch, Seq: r.seq})
	_, _ = r.group.Send(engine.Text, b)
}

// historyLimits are the limits of every room's history.
func (h *Hub) historyLimits() historyLimits {
	return historyLimits{count: h.cfg.HistorySize, window: int64(max(0, h.cfg.ResumeWindow)), bytes: h.cfg.HistoryBytes,
		maxAge: int64(h.cfg.HistoryMaxAge)}
}

// lockRoom returns the live room called name, locked, or nil.
func (h *Hub) lockRoom(name string) *room {
	v, ok := h.rooms.Load(name)
	if !ok {
		return nil
	}
	r := v.(*room)
	r.mu.Lock()
	if r.removed {
		r.mu.Unlock()
		return nil
	}
	return r
}

// load sets r's log from st. Callers hold r.mu.
func (h *Hub) load(r *room, st RoomState) {
	r.epoch, r.seq = st.Epoch, st.Seq
	r.resetHistory()
	now := time.Now().UnixNano()
	var p published
	for _, m := range st.Messages {
		msg, ok := h.sanitize(r.name, m.Data, &p)
		if !ok {
			continue
		}
		at := m.Time
		if at <= 0 || at > now {
			at = now
		}
		if p.React != 0 {
			h.applyReaction(r, m.Seq, &p)
			continue
		}
		if (p.Edits == 0 && p.Deletes == 0) || h.applyEntry(r, m.Seq, &p, at) {
			r.appendHistory(m.Seq, bytes.Clone(msg), at)
		}
	}
	r.trimHistory(now)
	r.reactSent = r.reactSeq // a joiner gets the counts; there is nobody to tell yet
	clear(r.reactChanged)
}

// Errors of making a room.
var (
	errRoomLimit   = errors.New("chat: the server has as many rooms as it holds")
	errCreateLimit = errors.New("chat: the client's address made too many rooms lately")
)

// roomFor returns the live room called name, making it if needed (on c's
// account: c nil for the server's own rooms), with its lock held.
func (h *Hub) roomFor(ctx context.Context, name string, c *client) (*room, error) {
	for {
		v, ok := h.rooms.Load(name)
		if !ok {
			r, made, err := h.makeRoom(ctx, name, c)
			if made || err != nil {
				return r, err
			}
			continue
		}
		r := v.(*room)
		<-r.loading // being made: wait, holding no lock, for its state
		r.mu.Lock()
		if !r.removed {
			return r, nil
		}
		r.mu.Unlock() // expired, or its making failed, meanwhile: make a new one
	}
}

// makeRoom makes the room called name on c's account (c nil for the
// server's own rooms) and subscribes to it, unless another goroutine made
// it first (made false). The room is returned locked.
//
// Only a room that is made is charged to its maker's budget, under the
// name's lock: joiners racing to make the same room each took a creation
// before (50 at once spent a network's 40 and were refused rate_limited),
// and at MaxRoomsTotal an empty room is evicted only for a creation the
// budget allows.
//
// The broker's round trips are made holding no lock but the name's: other
// rooms are made meanwhile, and the broker's calls for this one
// (presence, messages, a reset) do not wait for them. Joiners of the
// room wait on its loading channel (roomFor).
func (h *Hub) makeRoom(ctx context.Context, name string, c *client) (_ *room, made bool, _ error) {
	unlock := h.roomLocks.lock(name)
	defer unlock()
	// Rooms are stored and deleted under their name's lock: what Load
	// says now holds until unlock.
	if _, ok := h.rooms.Load(name); ok {
		return nil, false, nil // made meanwhile: the caller joins it
	}
	var by creatorKey // the server's own rooms: no budget
	if c != nil {
		var spent string
		if by, spent = h.mayCreate(c, time.Now()); spent != "" {
			return nil, false, &createLimitError{spent}
		}
	}
	if h.roomCount.Load() >= int64(h.cfg.MaxRoomsTotal) {
		h.evictEmptyRoom() // an empty room goes before any new one is refused
	}
	if !h.reserveRoom() {
		h.refund(by)
		return nil, false, errRoomLimit
	}
	nr := newRoom(name, h.ep.NewGroup(), h.historyLimits())
	nr.creator = by
	h.rooms.Store(name, nr)
	st, err := h.broker.Subscribe(ctx, name)
	nr.mu.Lock()
	if err != nil {
		nr.removed = true
		h.rooms.CompareAndDelete(name, nr)
		h.roomCount.Add(-1)
		h.refund(by)
		close(nr.loading)
		nr.mu.Unlock()
		return nil, false, err
	}
	if rt := nr.resetTo; rt != nil && rt.Epoch > st.Epoch {
		st = *rt // the log was reset while it loaded
	}
	h.load(nr, st)
	for _, e := range nr.early { // delivered while it loaded
		h.deliver(nr, e.seq, e.msg)
	}
	nr.early, nr.resetTo = nil, nil
	// Empty until joined: a room the server API opened (a publish, or
	// only to read its presence or history) is swept and evicted like
	// any other; a joiner clears this before it unlocks the room.
	nr.emptySince = time.Now()
	h.creators.made(by)
	close(nr.loading)
	if h.node != "" {
		// Ask the other nodes who of theirs is here.
		nr.asked = true
		if err := h.presence.PublishPresence(name, []byte(`{"count":0,"want":true}`)); err != nil {
			h.log.Warn("asking for a room's presence", "room", name, "err", err)
		}
	}
	return nr, true, nil
}

// reserveRoom counts a room about to be made, unless there are
// MaxRoomsTotal already.
func (h *Hub) reserveRoom() bool {
	for {
		n := h.roomCount.Load()
		if n >= int64(h.cfg.MaxRoomsTotal) {
			return false
		}
		if h.roomCount.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (h *Hub) join(c *client, req *protocol.Request) {
	if err := validRoom(req.Room); err != nil {
		h.fail(c, req, protocol.CodeBadRoom, "room name "+err.Error())
		return
	}
	if req.Since != nil && *req.Since < 0 {
		h.fail(c, req, protocol.CodeBadRequest, fmt.Sprintf("since %d: want the sequence number of the last message seen, 0 or more", *req.Since))
		return
	}
	if c.room(req.Room) == nil && len(c.rooms) >= h.cfg.MaxRooms {
		h.fail(c, req, protocol.CodeTooManyRooms, fmt.Sprintf("a client is in at most %d rooms", h.cfg.MaxRooms))
		return
	}
	if err := h.mayJoinNow(c, req.Room); err != nil {
		h.fail(c, req, protocol.CodeForbidden, err.Error())
		return
	}
	r, err := h.roomFor(h.ctx, req.Room, c)
	switch {
	case errors.Is(err, errCreateLimit):
		msg := fmt.Sprintf("an address may make at most %g new rooms a minute", h.cfg.RoomCreateRate)
		if e := (*createLimitError)(nil); errors.As(err, &e) && e.spent == "network" {
			msg = fmt.Sprintf("your network (an IPv4 /24, an IPv6 /48) may make at most %g new rooms a minute", h.cfg.RoomCreateRate*networkCreateShare)
		}
		h.fail(c, req, protocol.CodeRateLimited, msg)
		return
	case errors.Is(err, errRoomLimit):
		h.fail(c, req, protocol.CodeRoomLimit, fmt.Sprintf("the server holds at most %d rooms, none of them empty", h.cfg.MaxRoomsTotal))
		return
	case errors.Is(err, ErrStoreFull):
		h.fail(c, req, protocol.CodeRoomLimit, "the server's store holds as many rooms' histories as it may")
		return
	case err != nil:
		if h.brokerLog.allow(time.Now()) {
			h.log.Warn("subscribing to a room", "room", req.Room, "err", err)
		}
		h.fail(c, req, protocol.CodeUnavailable, "the room cannot be opened right now; try again")
		return
	}
	defer r.mu.Unlock()
	_, already := r.members[c.id]
	r.members[c.id] = c.nick
	news := !already && r.addMember(c.userID()) // a user's second connection is not news
	r.emptySince = time.Time{}
	if count := r.count(); count > h.cfg.LargeRoom {
		// A sample of a huge room, the same for every joiner for a while.
		sample := r.largeSample(min(h.cfg.PresenceListMax, largeRoomSample), h.cfg.LargeRoomCounts, time.Now())
		h.send(c, joinedLarge{Type: protocol.EventJoin, Room: r.name, Nick: c.nick, Count: count, Members: sample,
			Truncated: true, Seq: r.seq, Epoch: r.epoch})
	} else {
		members, truncated := r.memberSample(h.cfg.PresenceListMax)
		h.send(c, protocol.Joined{Type: protocol.EventJoin, Room: r.name, Nick: c.nick, Count: count, Members: members,
			Truncated: truncated, Seq: r.seq, Epoch: r.epoch})
	}
	// A newcomer gets the newest HistorySize messages; a client resuming
	// (since) everything stored after its last message, which the
	// ResumeWindow keeps however busy the room is.
	after, limit := int64(-1), h.cfg.HistorySize
	switch {
	case req.Since == nil:
	case req.Epoch != 0 && req.Epoch != r.epoch:
		after, limit = 0, r.histN() // since counts in another epoch: all of this one is new
	default:
		after, limit = *req.Since, r.histN()
	}
	msgs, gap := r.history(after, 0, limit)
	h.send(c, protocol.History{Type: protocol.EventHistory, Room: r.name, Messages: nonNil(msgs), Gap: gap})
	if b := r.reactionsOf(); b != nil {
		_ = h.ep.Send(c.id, engine.Text, b)
	}
	if already {
		return
	}
	// Added after the history was queued, under the room's lock: every
	// later message follows the history, none is missed or repeated.
	_ = r.group.Add(c.id)
	c.rooms = append(c.rooms, r)
	h.sendReadPos(c, r)
	if _, back := r.leaving[c.nick]; news && back {
		delete(r.leaving, c.nick) // back within the grace: neither left nor joined
		h.markDirty(r)            // (its count changed)
	} else if news {
		r.joined = append(r.joined, c.nick)
		h.markDirty(r)
	}
}

func nonNil(m []json.RawMessage) []json.RawMessage {
	if m == nil {
		return []json.RawMessage{}
	}
	return m
}

func (h *Hub) leave(c *client, req *protocol.Request) {
	r := c.room(req.Room)
	if r == nil {
		h.fail(c, req, protocol.CodeNotInRoom, fmt.Sprintf("not in room %q", req.Room))
		return
	}
	h.leaveRoom(c, r, false)
	h.send(c, protocol.Left{Type: protocol.EventLeave, Room: r.name})
}

// leaveRoom takes c out of r: it left (a leave request), or it is gone
// (its connection closed), which is told only past PresenceGrace: a
// reload, or a move to another tab, comes back within it unannounced.
func (h *Hub) leaveRoom(c *client, r *room, gone bool) {
	r.mu.Lock()
	delete(r.members, c.id)
	_ = r.group.Remove(c.id)
	if r.removeMember(c.userID()) {
		if gone && h.cfg.PresenceGrace > 0 {
			if r.leaving == nil {
				r.leaving = make(map[string]time.Time)
			}
			r.leaving[c.nick] = time.Now()
		} else {
			r.left = append(r.left, c.nick)
		}
		h.markDirty(r)
	}
	if len(r.members) == 0 {
		r.emptySince = time.Now()
	}
	r.mu.Unlock()
	c.rooms = slices.DeleteFunc(c.rooms, func(x *room) bool { return x == r })
}

// evictEmptyRoom removes an empty room, if any, choosing first one
// nobody ever said anything in, of the creator with the most live rooms
// (a room maker's rooms go before anyone else's), then the room empty
// longest: a quiet room's history, kept for its returning members, goes
// last.
func (h *Hub) evictEmptyRoom() {
	type candidate struct {
		r      *room
		unused bool
		by     creatorKey
		since  time.Time
	}
	var cands []candidate
	h.rooms.Range(func(_, v any) bool {
		r := v.(*room)
		r.mu.Lock()
		if len(r.members) == 0 && !r.emptySince.IsZero() {
			cands = append(cands, candidate{r, r.seq == 0 && r.histN() == 0, r.creator, r.emptySince})
		}
		r.mu.Unlock()
		return true
	})
	var best *candidate
	bestRooms := 0
	for i := range cands {
		c := &cands[i]
		n := h.creators.roomsOf(c.by)
		switch {
		case best == nil,
			c.unused && !best.unused,
			c.unused == best.unused && n > bestRooms,
			c.unused == best.unused && n == bestRooms && c.since.Before(best.since):
			best, bestRooms = c, n
		}
	}
	if best != nil {
		h.removeRoom(best.r)
	}
}

// sweep removes rooms that have been empty for HistoryTTL.
func (h *Hub) sweep(now time.Time) {
	h.rooms.Range(func(k, v any) bool {
		r := v.(*room)
		r.mu.Lock()
		expired := len(r.members) == 0 && !r.emptySince.IsZero() && now.Sub(r.emptySince) >= h.cfg.HistoryTTL
		r.trimHistory(now.UnixNano())
		r.mu.Unlock()
		if expired {
			h.removeRoom(r)
		}
		return true
	})
}

// removeRoom removes r if it is still empty, and unsubscribes from it
// before a new room of that name can subscribe again (the name's lock),
// holding no lock of r's while the broker works.
func (h *Hub) removeRoom(r *room) {
	unlock := h.roomLocks.lock(r.name)
	defer unlock()
	r.mu.Lock()
	if len(r.members) > 0 || r.removed || r.isLoading() {
		r.mu.Unlock()
		return
	}
	r.removed = true
	if h.rooms.CompareAndDelete(r.name, r) {
		h.roomCount.Add(-1)
		h.creators.gone(r.creator)
	}
	r.mu.Unlock()
	if err := h.broker.Unsubscribe(r.name); err != nil {
		h.log.Warn("unsubscribing from a room", "room", r.name, "err", err)
	}
}

func (h *Hub) history(c *client, req *protocol.Request) {
	r := c.room(req.Room)
	if r == nil {
		h.fail(c, req, protocol.CodeNotInRoom, fmt.Sprintf("join %q to read its history", req.Room))
		return
	}
	limit := req.Limit
	if limit <= 0 || limit > h.cfg.HistorySize {
		limit = h.cfg.HistorySize
	}
	r.mu.Lock()
	msgs, _ := r.history(-1, req.Before, limit)
	r.mu.Unlock()
	h.send(c, protocol.History{Type: protocol.EventHistory, Room: r.name, Messages: nonNil(msgs)})
}
