package engine

import (
	"fmt"
	"slices"
	"sync/atomic"
)

// Group is a set of an endpoint's clients that a message can be sent to as
// one, such as a chat room. Sending to a group costs what a broadcast costs:
// the frame is encoded once and each writer walks its own members; nothing
// is looked up or allocated per member.
//
// Membership changes are ordered with sends: a client added before a send
// receives it, one removed before does not. A client leaves every group when
// it closes. Methods are safe for concurrent use.
type Group struct {
	ep    *Endpoint
	count atomic.Int64
	// members[i] lists the members owned by writer i; only writer i's
	// goroutine reads or changes it.
	members [][]*conn
}

// groupSlot records a client's place in one group's member list.
type groupSlot struct {
	g   *Group
	idx int32
}

// NewGroup returns an empty group of the endpoint's clients.
func (ep *Endpoint) NewGroup() *Group {
	return &Group{ep: ep, members: make([][]*conn, len(ep.srv.writers))}
}

// Len returns the number of members, as of the last applied change.
func (g *Group) Len() int { return int(g.count.Load()) }

// Add makes client id a member; adding a member again does nothing. It
// returns ErrUnknownClient if the endpoint has no such client.
func (g *Group) Add(id ClientID) error {
	c := g.ep.lookup(id)
	if c == nil {
		return fmt.Errorf("add client %d to a group: %w", id, ErrUnknownClient)
	}
	c.w.post(job{kind: jobGroupAdd, c: c, g: g})
	return nil
}

// Remove takes client id out of the group; removing a non-member does
// nothing. It returns ErrUnknownClient if the endpoint has no such client.
func (g *Group) Remove(id ClientID) error {
	c := g.ep.lookup(id)
	if c == nil {
		return fmt.Errorf("remove client %d from a group: %w", id, ErrUnknownClient)
	}
	c.w.post(job{kind: jobGroupRemove, c: c, g: g})
	return nil
}

// Send queues a message, encoded once, to every member except the listed
// ids. It returns the number of members when it was called.
func (g *Group) Send(typ MessageType, data []byte, except ...ClientID) (int, error) {
	if err := checkMessage(typ, data); err != nil {
		return 0, fmt.Errorf("send to group: %w", err)
	}
	f := newDataFrame(typ, data, 0)
	var ex []ClientID
	if len(except) > 0 {
		ex = slices.Clone(except)
	}
	g.ep.srv.stats.framesEncoded.Add(1)
	g.ep.postToWriters(job{kind: jobGroupSend, g: g, f: f, except: ex}, nil)
	return g.Len(), nil
}

// groupAdd runs on c's writer.
func (w *writer) groupAdd(g *Group, c *conn) {
	if c.flags.Load(flagGone) || slices.ContainsFunc(c.groups, func(s groupSlot) bool { return s.g == g }) {
		return
	}
	c.groups = append(c.groups, groupSlot{g: g, idx: int32(len(g.members[w.idx]))})
	g.members[w.idx] = append(g.members[w.idx], c)
	g.count.Add(1)
}

// groupRemove runs on c's writer.
func (w *writer) groupRemove(g *Group, c *conn) {
	i := slices.IndexFunc(c.groups, func(s groupSlot) bool { return s.g == g })
	if i < 0 {
		return
	}
	w.dropFromGroup(c, i)
}

// dropFromGroup removes c from the group of its slot i.
func (w *writer) dropFromGroup(c *conn, i int) {
	slot := c.groups[i]
	m := slot.g.members[w.idx]
	last := len(m) - 1
	if int(slot.idx) != last {
		moved := m[last]
		m[slot.idx] = moved
		for k := range moved.groups {
			if moved.groups[k].g == slot.g {
				moved.groups[k].idx = slot.idx
				break
			}
		}
	}
	m[last] = nil
	slot.g.members[w.idx] = m[:last]
	slot.g.count.Add(-1)
	c.groups[i] = c.groups[len(c.groups)-1]
	c.groups[len(c.groups)-1] = groupSlot{}
	c.groups = c.groups[:len(c.groups)-1]
}
