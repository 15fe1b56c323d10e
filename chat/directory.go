package chat

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// The room directory and search: a client finds rooms to join by name,
// and messages in a room's history by their text. Both are bounded: the
// directory lists the rooms this node holds (at most MaxRoomsTotal), a
// search reads the room's history (at most HistoryBytes).

// RoomInfo is a room in the directory.
type RoomInfo struct {
	Room    string `json:"room"`
	Count   int    `json:"count"`             // its members, on every node
	Private bool   `json:"private,omitempty"` // listed to those who may join it
}

// RoomList answers a rooms request: rooms by name, after After.
type RoomList struct {
	Type  string     `json:"type"` // "rooms"
	Q     string     `json:"q,omitempty"`
	Rooms []RoomInfo `json:"rooms"`
	// Next, when set, is the After of the next page.
	Next string `json:"next,omitempty"`
}

// SearchResult answers a search: the room's messages holding Q, newest
// last, and where to search on from.
type SearchResult struct {
	Type     string            `json:"type"` // "search"
	Room     string            `json:"room"`
	Q        string            `json:"q"`
	Messages []json.RawMessage `json:"messages"`
	// Before, when set, is the Before of a search for older ones; unset,
	// the history holds no older match.
	Before int64 `json:"before,omitempty"`
}

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
func (h *Hub) Rooms(q, after string, limit int, may func(room string) bool) (list []RoomInfo, next string, err error) {
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
		list = append(list, RoomInfo{Room: name, Count: r.count(), Private: h.private(name)})
		r.mu.Unlock()
	}
	return list, next, nil
}

// listRooms answers c's rooms request.
func (h *Hub) listRooms(c *client, req *Request) {
	list, next, err := h.Rooms(req.Q, req.After, req.Limit, func(room string) bool { return h.mayJoinNow(c, room) == nil })
	if err != nil {
		h.fail(c, req, ErrBadRequest, err.Error())
		return
	}
	h.send(c, RoomList{Type: "rooms", Q: req.Q, Rooms: nonNilRooms(list), Next: next})
}

func nonNilRooms(l []RoomInfo) []RoomInfo {
	if l == nil {
		return []RoomInfo{}
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

// searchRoom answers c's search request in a room it is in.
func (h *Hub) searchRoom(c *client, req *Request) {
	r := c.room(req.Room)
	switch {
	case r == nil:
		h.fail(c, req, ErrNotInRoom, fmt.Sprintf("join %q to search it", req.Room))
		return
	case strings.TrimSpace(req.Q) == "" || len(req.Q) > maxQuery:
		h.fail(c, req, ErrBadRequest, fmt.Sprintf("a search needs q, 1 to %d bytes", maxQuery))
		return
	case req.Before < 0:
		h.fail(c, req, ErrBadRequest, "before: want a sequence number")
		return
	}
	limit := req.Limit
	if limit <= 0 || limit > MaxSearchResult {
		limit = MaxSearchResult
	}
	r.mu.Lock()
	msgs, next := r.find(req.Q, req.Before, limit)
	r.mu.Unlock()
	h.send(c, SearchResult{Type: "search", Room: r.name, Q: req.Q, Messages: msgs, Before: next})
}

// Search is the server API's search of a room's history (see Rooms for
// the room's opening).
func (h *Hub) Search(room, q string, before int64, limit int) (SearchResult, error) {
	if strings.TrimSpace(q) == "" || len(q) > maxQuery {
		return SearchResult{}, fmt.Errorf("%w: q: 1 to %d bytes", ErrInvalid, maxQuery)
	}
	if before < 0 {
		return SearchResult{}, fmt.Errorf("%w: before %d", ErrInvalid, before)
	}
	if limit <= 0 || limit > MaxSearchResult {
		limit = MaxSearchResult
	}
	r, err := h.openForBackend(room)
	if err != nil {
		return SearchResult{}, err
	}
	defer r.mu.Unlock()
	msgs, next := r.find(q, before, limit)
	return SearchResult{Type: "search", Room: room, Q: q, Messages: msgs, Before: next}, nil
}
