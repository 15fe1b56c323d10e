package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/parleyhq/parley/protocol"
)

// The room directory and search: a client finds rooms to join by name,
// and messages in a room's history by their text. Both are bounded: the
// directory lists the rooms this node holds (at most MaxRoomsTotal), a
// search reads the room's history (at most HistoryBytes).

// Limits of the directory and of search.
const (
	maxQuery        = 64 // bytes of a q
	DefaultListSize = 50 // rooms a page lists, and at most
	MaxSearchResult = 50 // messages a search returns
)

// Rooms lists the rooms this node holds whose name holds q (case
// folded), by name, after after, at most limit (DefaultListSize when 0
// or more); may tells whether a private room is listed (nil: none is).
// In a cluster a room no client of this node nor its API opened is not
// listed.
func (h *Hub) Rooms(q, after string, limit int, may func(room string) bool) (list []protocol.RoomInfo, next string, err error) {
	if len(q) > maxQuery || !utf8.ValidString(q) {
		return nil, "", fmt.Errorf("%w: q: at most %d bytes of text", ErrInvalid, maxQuery)
	}
	if limit <= 0 || limit > DefaultListSize {
		limit = DefaultListSize
	}
	q = strings.ToLower(q)
	var names []string
	h.rooms.Range(func(k, _ any) bool {
		name := k.(string)
		if name > after && strings.Contains(strings.ToLower(name), q) && (!h.private(name) || may != nil && may(name)) {
			names = append(names, name)
		}
		return true
	})
	slices.Sort(names)
	if len(names) > limit {
		names, next = names[:limit], names[limit-1]
	}
	for _, name := range names {
		r := h.lockRoom(name)
		if r == nil {
			continue // removed meanwhile
		}
		list = append(list, protocol.RoomInfo{Room: name, Count: r.count(), Private: h.private(name)})
		r.mu.Unlock()
	}
	return list, next, nil
}

// listRooms answers c's rooms request.
func (h *Hub) listRooms(c *client, req *protocol.Request) {
	list, next, err := h.Rooms(req.Q, req.After, req.Limit, func(room string) bool { return h.mayJoinNow(c, room) == nil })
	if err != nil {
		h.fail(c, req, protocol.CodeBadRequest, err.Error())
		return
	}
	h.send(c, protocol.RoomList{Type: protocol.EventRooms, Q: req.Q, Rooms: nonNilRooms(list), Next: next})
}

func nonNilRooms(l []protocol.RoomInfo) []protocol.RoomInfo {
	if l == nil {
		return []protocol.RoomInfo{}
	}
	return l
}

// find finds, in r's history, the messages (not deleted) whose text
// holds q (case folded), before before (0: the latest), the newest limit
// of them, oldest first; and the Before of the next search (0: none
// older). Callers hold r.mu.
func (r *room) find(q string, before int64, limit int) ([]json.RawMessage, int64) {
	q = strings.ToLower(q)
	hi := r.histN()
	if before > 0 {
		hi = r.search(before)
	}
	var hits []int
	next := int64(0)
	for i := hi - 1; i >= 0; i-- {
		m := r.at(i)
		if kindOf(m.msg) != kindMessage {
			continue
		}
		var p published
		if decodeStrict(m.msg, &p) != nil || p.Deleted != 0 || !strings.Contains(strings.ToLower(p.Text), q) {
			continue
		}
		if len(hits) == limit {
			next = r.at(hits[len(hits)-1]).seq // more: search on below the oldest returned
			break
		}
		hits = append(hits, i)
	}
	out := make([]json.RawMessage, 0, len(hits))
	for _, i := range slices.Backward(hits) {
		m := r.at(i)
		b, _ := r.encode(nil, m.seq, m.msg)
		out = append(out, b)
	}
	return out, next
}

// LogReader is a Broker that can read back a room's log beyond the
// history a node keeps (natsbroker: the room's stream, on disk with
// --data-dir): a search goes on there.
type LogReader interface {
	// ReadLog returns the entries of room's log numbered below before
	// that the broker still holds, at most max of the newest, oldest
	// first. The room is open on this node.
	ReadLog(room string, before int64, max int) ([]StoredMessage, error)
}

// maxLogScan bounds the entries of a room's log a search reads beyond the
// history: the work of one request.
const maxLogScan = 1000

// findInLog searches the entries of r's log below the history (from the
// broker, off the hub's callbacks) for messages holding q, the newest
// limit of them before before, applying the edits and deletes found
// there and in the history. It returns them, oldest first, and the Before
// of a search for older ones (0: none).
func (h *Hub) findInLog(lr LogReader, r *room, q string, before int64, limit int) ([]json.RawMessage, int64, error) {
	r.mu.Lock()
	below := before
	if r.histN() > 0 && (below <= 0 || below > r.at(0).seq) {
		below = r.at(0).seq // what the history holds was searched there
	} else if below <= 0 {
		below = r.seq + 1
	}
	// The history's edits and deletes may change older messages.
	changed := map[int64]*published{}
	for i := 0; i < r.histN(); i++ {
		if k := kindOf(r.at(i).msg); k == kindEdit || k == kindDelete {
			var p published
			if decodeStrict(r.at(i).msg, &p) == nil {
				changed[max(p.Edits, p.Deletes)] = &p
			}
		}
	}
	r.mu.Unlock()
	entries, err := lr.ReadLog(r.name, below, maxLogScan)
	if err != nil {
		return nil, 0, err
	}
	// Edits and deletes within the range, in order: a later one wins;
	// the history's, later than all of them, win over them.
	parsed := make([]published, len(entries))
	ok := make([]bool, len(entries))
	inLog := map[int64]*published{}
	for i, e := range entries {
		if _, good := h.sanitize(r.name, e.Data, &parsed[i]); good {
			ok[i] = true
			if p := &parsed[i]; p.Edits != 0 || p.Deletes != 0 {
				inLog[max(p.Edits, p.Deletes)] = p
			}
		}
	}
	for t, p := range inLog {
		if changed[t] == nil {
			changed[t] = p
		}
	}
	q = strings.ToLower(q)
	var hits []int
	next := int64(0)
	for i := len(entries) - 1; i >= 0; i-- {
		p := &parsed[i]
		if !ok[i] || p.Edits != 0 || p.Deletes != 0 || p.React != 0 {
			continue
		}
		if c := changed[entries[i].Seq]; c != nil && mayChange(c, p) && c.Deletes != 0 {
			continue
		} else if c != nil && mayChange(c, p) {
			p.Text, p.Edited = c.Text, c.TS
		}
		if !strings.Contains(strings.ToLower(p.Text), q) {
			continue
		}
		if len(hits) == limit {
			next = entries[hits[len(hits)-1]].Seq
			break
		}
		hits = append(hits, i)
	}
	if next == 0 && len(entries) == maxLogScan {
		next = entries[0].Seq // the scan stopped here: older ones may match
	}
	out := make([]json.RawMessage, 0, len(hits))
	for _, i := range slices.Backward(hits) {
		b, err := marshal(&parsed[i])
		if err != nil {
			continue
		}
		enc, _ := r.encode(nil, entries[i].Seq, b)
		out = append(out, enc)
	}
	return out, next, nil
}

// mayChange reports whether edit or delete c may change message t: the
// rule applyEntry holds entries from the bus to.
func mayChange(c, t *published) bool {
	return c.System && t.System || c.User != "" && c.User == t.User || c.SID != "" && c.SID == t.SID || c.Deletes != 0 && c.Mod
}

// searchRoom answers c's search request in a room it is in.
func (h *Hub) searchRoom(c *client, req *protocol.Request) {
	r := c.room(req.Room)
	switch {
	case r == nil:
		h.fail(c, req, protocol.CodeNotInRoom, fmt.Sprintf("join %q to search it", req.Room))
		return
	case strings.TrimSpace(req.Q) == "" || len(req.Q) > maxQuery:
		h.fail(c, req, protocol.CodeBadRequest, fmt.Sprintf("a search needs q, 1 to %d bytes", maxQuery))
		return
	case req.Before < 0:
		h.fail(c, req, protocol.CodeBadRequest, "before: want a sequence number")
		return
	}
	limit := req.Limit
	if limit <= 0 || limit > MaxSearchResult {
		limit = MaxSearchResult
	}
	r.mu.Lock()
	msgs, next := r.find(req.Q, req.Before, limit)
	r.mu.Unlock()
	lr, _ := h.broker.(LogReader)
	if lr == nil || len(msgs) == limit { // fewer: the history was searched to its start
		h.send(c, protocol.SearchResult{Type: protocol.EventSearch, Room: r.name, Q: req.Q, Messages: msgs, Before: next})
		return
	}
	// The history is searched to its start: go on in the broker's log
	// (the stream on disk with --data-dir), off this callback.
	id, info, q, before := c.id, *req, req.Q, req.Before
	if !h.queueRead(func() {
		older, olderNext, err := h.findInLog(lr, r, q, before, limit-len(msgs))
		c := h.client(id)
		if c == nil {
			return
		}
		if err != nil {
			h.fail(c, &info, protocol.CodeUnavailable, "the room's log could not be read: "+err.Error())
			return
		}
		h.send(c, protocol.SearchResult{Type: protocol.EventSearch, Room: r.name, Q: q, Messages: append(older, msgs...), Before: olderNext})
	}) {
		h.fail(c, req, protocol.CodeUnavailable, "too many requests wait for the store; try again")
	}
}

// Search is the server API's search of a room's history (see Rooms for
// the room's opening).
func (h *Hub) Search(ctx context.Context, room, q string, before int64, limit int) (protocol.SearchResult, error) {
	if strings.TrimSpace(q) == "" || len(q) > maxQuery {
		return protocol.SearchResult{}, fmt.Errorf("%w: q: 1 to %d bytes", ErrInvalid, maxQuery)
	}
	if before < 0 {
		return protocol.SearchResult{}, fmt.Errorf("%w: before %d", ErrInvalid, before)
	}
	if limit <= 0 || limit > MaxSearchResult {
		limit = MaxSearchResult
	}
	r, err := h.openForBackend(ctx, room)
	if err != nil {
		return protocol.SearchResult{}, err
	}
	defer r.mu.Unlock()
	msgs, next := r.find(q, before, limit)
	return protocol.SearchResult{Type: protocol.EventSearch, Room: room, Q: q, Messages: msgs, Before: next}, nil
}
