package chat

import (
	"fmt"
	"slices"
	"sync"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// Read state: where a signed-in user has read to in each room, held by
// the server (a ReadStore: the broker's, in NATS for a cluster or
// --data-dir), so that every device of the user shows the same unread
// counts: a read on one is pushed to the user's other connections, on
// every node. Guests keep their counts in their page.

// ReadPos is a read position: the last sequence number seen of a room's
// log, in its epoch (a position of another epoch than the room's is no
// position).
type ReadPos struct {
	Seq   int64 `json:"seq"`
	Epoch int64 `json:"epoch"`
}

// after reports whether p is further than q: a later epoch, or a later
// number in the same one.
func (p ReadPos) after(q ReadPos) bool {
	return p.Epoch > q.Epoch || p.Epoch == q.Epoch && p.Seq > q.Seq
}

// ReadStore keeps signed-in users' read positions. The hub uses its
// Broker's when it is one (MemoryBroker and natsbroker.Broker are).
// Both methods may block on the network: the hub calls them off its
// clients' callbacks.
type ReadStore interface {
	// ReadPosition returns user's position in room, the zero ReadPos if
	// none is held.
	ReadPosition(user, room string) (ReadPos, error)
	// MarkRead moves user's position in room forward to pos, never back
	// (a position no further than the one held changes nothing), and
	// returns the position held after it.
	MarkRead(user, room string, pos ReadPos) (ReadPos, error)
}

// readJobs bounds the read-state calls waiting for the store; past it a
// read request is refused with unavailable (and a join's position is
// not sent: the page keeps its own count).
const readJobs = 4096

// readWorkers is how many calls to the store run at once.
const readWorkers = 4

// readWork runs the hub's calls to its ReadStore.
func (h *Hub) readWork() {
	defer h.wg.Done()
	for {
		select {
		case <-h.ctx.Done():
			return
		case f := <-h.readQ:
			f()
		}
	}
}

// queueRead queues f for the read workers; false when the queue is full.
func (h *Hub) queueRead(f func()) bool {
	select {
	case h.readQ <- f:
		return true
	default:
		h.stats.readsRefused.Add(1)
		return false
	}
}

// read moves c's user's read position in a room it is in; every
// connection of the user, on every node, is told.
func (h *Hub) read(c *client, req *protocol.Request) {
	user := c.userID()
	if req.DM && user != "" && req.Room == "" {
		// Every DM to the user so far is read: no notification of them.
		if err := h.broadcast(control{Kind: "read_dms", User: user, TS: now()}); err != nil {
			h.fail(c, req, protocol.CodeUnavailable, "the read mark could not be passed on: "+err.Error())
		}
		return
	}
	r := c.room(req.Room)
	switch {
	case user == "":
		h.fail(c, req, protocol.CodeForbidden, "guests keep their read state in their page: sign in to keep it on the server")
		return
	case req.DM:
		h.fail(c, req, protocol.CodeBadRequest, "a read mark is of a room or of the DMs (dm), not both")
		return
	case h.reads == nil:
		h.fail(c, req, protocol.CodeUnavailable, "this server keeps no read state")
		return
	case r == nil:
		h.fail(c, req, protocol.CodeNotInRoom, fmt.Sprintf("join %q before marking it read", req.Room))
		return
	case req.Seq < 0:
		h.fail(c, req, protocol.CodeBadRequest, fmt.Sprintf("seq %d: want the sequence number of the last message read", req.Seq))
		return
	}
	r.mu.Lock()
	pos := ReadPos{Seq: min(req.Seq, r.seq), Epoch: r.epoch} // nothing past what was said
	r.mu.Unlock()
	room, info, nick := r.name, *req, c.nick
	id := c.id
	if !h.queueRead(func() {
		held, err := h.reads.MarkRead(user, room, pos)
		if err != nil {
			h.stats.readsFailed.Add(1)
			if c := h.client(id); c != nil {
				h.fail(c, &info, protocol.CodeUnavailable, "the read state could not be kept: "+err.Error())
			}
			return
		}
		if held != pos {
			return // another device read further already: it told everyone
		}
		h.stats.reads.Add(1)
		if err := h.broadcast(control{Kind: "read", User: user, From: nick, Room: room, Seq: held.Seq, Epoch: held.Epoch}); err != nil {
			h.stats.readsFailed.Add(1)
		}
	}) {
		h.fail(c, req, protocol.CodeUnavailable, "too many read marks wait for the store; try again")
	}
}

// sendReadPos sends c (a signed-in user's connection) its user's read
// position in room, once the store has answered, if it is of the room's
// current epoch.
func (h *Hub) sendReadPos(c *client, r *room) {
	user, id, room := c.userID(), c.id, r.name
	if user == "" || h.reads == nil {
		return
	}
	h.queueRead(func() {
		pos, err := h.reads.ReadPosition(user, room)
		if err != nil {
			h.stats.readsFailed.Add(1)
			return
		}
		if c := h.client(id); c != nil && pos != (ReadPos{}) {
			h.send(c, protocol.Read{Type: protocol.EventRead, Room: room, Seq: pos.Seq, Epoch: pos.Epoch})
		}
	})
}

// pushRead tells every connection of user here its position in room.
func (h *Hub) pushRead(m *control) {
	if validRoom(m.Room) != nil || m.Seq < 0 || m.Epoch <= 0 {
		h.dropped("control", fmt.Errorf("a read mark of room %q, seq %d, epoch %d", m.Room, m.Seq, m.Epoch))
		return
	}
	h.readNotes(m.User, func(n *Notification) bool {
		return n.Kind == "mention" && n.Room == m.Room && n.Epoch == m.Epoch && n.Seq <= m.Seq
	})
	h.tellSeen(m)
	ids := h.userClients(m.User)
	if len(ids) == 0 {
		return
	}
	b, err := marshal(protocol.Read{Type: protocol.EventRead, Room: m.Room, Seq: m.Seq, Epoch: m.Epoch})
	if err != nil {
		return
	}
	_, _ = h.ep.Multicast(ids, engine.Text, b)
}

// SeenByMax is the largest room whose members are told who read how far
// (seen): in a bigger one it would be a storm, and say little.
const SeenByMax = 20

// tellSeen tells this node's members of the room of read mark m, if the
// room is small (at most SeenByMax members) and the mark of its epoch.
func (h *Hub) tellSeen(m *control) {
	if m.From == "" || !isNick(m.From) {
		return
	}
	r := h.lockRoom(m.Room)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	if r.isLoading() || r.epoch != m.Epoch || r.count() > SeenByMax || len(r.members) == 0 {
		return
	}
	own := h.userClients(m.User) // the reader's connections have its read event
	ids := make([]engine.ClientID, 0, len(r.members))
	for id := range r.members {
		if !slices.Contains(own, id) {
			ids = append(ids, id)
		}
	}
	if b, err := marshal(protocol.Seen{Type: protocol.EventSeen, Room: r.name, Nick: m.From, User: m.User, Seq: m.Seq}); err == nil && len(ids) > 0 {
		_, _ = h.ep.Multicast(ids, engine.Text, b) // a small room: a copy each is cheap
	}
}

// MaxReadPositions bounds the read positions a MemoryBroker keeps; past
// it, one held is forgotten (at random) for each new one.
const MaxReadPositions = 1 << 20

// memoryReads is MemoryBroker's ReadStore.
type memoryReads struct {
	mu sync.Mutex
	m  map[string]ReadPos // by user "\x00" room
}

// ReadPosition implements ReadStore.
func (b *MemoryBroker) ReadPosition(user, room string) (ReadPos, error) {
	b.reads.mu.Lock()
	defer b.reads.mu.Unlock()
	return b.reads.m[user+"\x00"+room], nil
}

// MarkRead implements ReadStore.
func (b *MemoryBroker) MarkRead(user, room string, pos ReadPos) (ReadPos, error) {
	b.reads.mu.Lock()
	defer b.reads.mu.Unlock()
	k := user + "\x00" + room
	held, ok := b.reads.m[k]
	if ok && !pos.after(held) {
		return held, nil
	}
	if b.reads.m == nil {
		b.reads.m = make(map[string]ReadPos)
	}
	if !ok && len(b.reads.m) >= MaxReadPositions {
		for old := range b.reads.m {
			delete(b.reads.m, old)
			break
		}
	}
	b.reads.m[k] = pos
	return pos, nil
}

var _ ReadStore = (*MemoryBroker)(nil)
