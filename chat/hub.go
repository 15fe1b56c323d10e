package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/engine"
)

// largeRoomSample is the most names a joiner of a room above LargeRoom gets:
// a sample of thousands says no more with 100 names than with 20, and in a
// connect storm into such a room the longer list measurably slowed
// connecting.
const largeRoomSample = 20

// clientShards is the number of stripes of the client map.
const clientShards = 64

// Hub is the chat: an engine.Application that keeps rooms, nicknames and
// history, and a BrokerHandler that fans room messages out to local
// members. Create it with New and mount it on an engine.Server.
type Hub struct {
	cfg    Config
	log    *slog.Logger
	broker Broker
	ep     *engine.Endpoint

	clients [clientShards]struct {
		sync.RWMutex
		m map[engine.ClientID]*client
	}
	nickMu sync.Mutex
	nicks  map[string]engine.ClientID // by lower-cased nick

	rooms   sync.Map // name -> *room; lock-free reads (Publish may call back under a room lock)
	dirtyMu sync.Mutex
	dirty   []*room // rooms with presence changes to send

	epoch int64 // when the hub was made, Unix ms: sequence numbers are per epoch
	stats hubStats
	stop  chan struct{}
	wg    sync.WaitGroup
}

var (
	_ engine.Application = (*Hub)(nil)
	_ BrokerHandler      = (*Hub)(nil)
)

// client is one connected chat client. Its fields are used by its own
// callbacks, which the engine serializes; nick is also changed under
// Hub.nickMu.
type client struct {
	id    engine.ClientID
	nick  string
	rooms []*room // at most MaxRooms: a slice costs far less per client than a map

	tokens, strikes float64 // rate limiting
	last            int64   // unix ns of the last request
	lastTyping      int64
}

// room returns the joined room called name, or nil.
func (c *client) room(name string) *room {
	for _, r := range c.rooms {
		if r.name == name {
			return r
		}
	}
	return nil
}

// New returns a Hub for cfg, or an error naming the first invalid field.
func New(cfg Config) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	h := &Hub{cfg: c, log: c.Logger, broker: c.Broker, nicks: make(map[string]engine.ClientID),
		stop: make(chan struct{}), epoch: time.Now().UnixMilli()}
	if h.broker == nil {
		h.broker = NewMemoryBroker()
	}
	for i := range h.clients {
		h.clients[i].m = make(map[engine.ClientID]*client)
	}
	return h, nil
}

// OnStart implements engine.Application.
func (h *Hub) OnStart(ep *engine.Endpoint) error {
	h.ep = ep
	if err := h.broker.Run(h); err != nil {
		return fmt.Errorf("chat: start broker: %w", err)
	}
	h.wg.Add(1)
	go h.presenceLoop()
	return nil
}

// OnStop implements engine.Application.
func (h *Hub) OnStop() {
	close(h.stop)
	h.wg.Wait()
	if err := h.broker.Close(); err != nil {
		h.log.Warn("closing the broker", "err", err)
	}
}

// OnHandshake implements engine.Application: the engine has checked the
// origin; every client is welcome.
func (h *Hub) OnHandshake(*http.Request) (any, error) { return nil, nil }

func (h *Hub) client(id engine.ClientID) *client {
	s := &h.clients[id%clientShards]
	s.RLock()
	defer s.RUnlock()
	return s.m[id]
}

// OnOpen implements engine.Application: the client gets a default nick, a
// welcome, and the default room.
func (h *Hub) OnOpen(id engine.ClientID, _ any) {
	c := &client{id: id, tokens: float64(h.cfg.RateBurst), last: time.Now().UnixNano()}
	h.nickMu.Lock()
	c.nick = "guest-" + strconv.FormatUint(uint64(id), 10)
	h.nicks[strings.ToLower(c.nick)] = id
	h.nickMu.Unlock()
	s := &h.clients[id%clientShards]
	s.Lock()
	s.m[id] = c
	s.Unlock()
	h.send(c, Welcome{Type: "welcome", ID: uint64(id), Nick: c.nick, Room: h.cfg.DefaultRoom, Epoch: h.epoch, Limits: Limits{
		MaxTextLength: h.cfg.MaxTextLength, MaxRooms: h.cfg.MaxRooms, MaxNickLength: MaxNickLength,
		RatePerSecond: h.cfg.RateLimit, RateBurst: h.cfg.RateBurst, HistorySize: h.cfg.HistorySize,
	}})
	h.join(c, &Request{Type: TypeJoin, Room: h.cfg.DefaultRoom})
}

// OnClose implements engine.Application: the client leaves its rooms and
// frees its nick.
func (h *Hub) OnClose(id engine.ClientID, _ engine.StatusCode, _ string) {
	c := h.client(id)
	if c == nil {
		return
	}
	for len(c.rooms) > 0 {
		h.leaveRoom(c, c.rooms[len(c.rooms)-1])
	}
	h.nickMu.Lock()
	if h.nicks[strings.ToLower(c.nick)] == id {
		delete(h.nicks, strings.ToLower(c.nick))
	}
	h.nickMu.Unlock()
	s := &h.clients[id%clientShards]
	s.Lock()
	delete(s.m, id)
	s.Unlock()
}

// OnMessage implements engine.Application.
func (h *Hub) OnMessage(id engine.ClientID, typ engine.MessageType, data []byte) {
	c := h.client(id)
	if c == nil {
		return
	}
	if typ != engine.Text {
		h.fail(c, nil, ErrBinary, "binary messages are not part of the chat protocol")
		return
	}
	var req Request
	if !looksLikeJSON(data) || json.Unmarshal(data, &req) != nil {
		// Plain text, as the seed's clients send: say it in the default room.
		req = Request{Type: TypeSay, Room: h.cfg.DefaultRoom, Text: string(data)}
	}
	if req.Type != TypeTyping && !h.allow(c) {
		return
	}
	switch req.Type {
	case TypeSay:
		h.say(c, &req)
	case TypeJoin:
		h.join(c, &req)
	case TypeLeave:
		h.leave(c, &req)
	case TypeNick:
		h.nick(c, &req)
	case TypeDM:
		h.dm(c, &req)
	case TypeHistory:
		h.history(c, &req)
	case TypeTyping:
		h.typing(c, &req)
	case "":
		h.fail(c, &req, ErrBadRequest, "a request needs a type")
	default:
		h.fail(c, &req, ErrUnknownType, fmt.Sprintf("unknown request type %q", req.Type))
	}
}

func looksLikeJSON(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// allow applies the client's token bucket; a client that keeps pushing
// past RateHardLimit refusals is closed with 1008.
func (h *Hub) allow(c *client) bool {
	rate := h.cfg.RateLimit
	if rate < 0 {
		return true
	}
	now := time.Now().UnixNano()
	elapsed := float64(now-c.last) / 1e9
	c.last = now
	c.tokens = min(float64(h.cfg.RateBurst), c.tokens+elapsed*rate)
	c.strikes = max(0, c.strikes-elapsed*rate)
	if c.tokens >= 1 {
		c.tokens--
		return true
	}
	c.strikes++
	h.stats.rateLimited.Add(1)
	if c.strikes > float64(h.cfg.RateHardLimit) {
		_ = h.ep.Close(c.id, engine.StatusPolicyViolation, "rate limit exceeded")
		return false
	}
	h.fail(c, nil, ErrRateLimited, fmt.Sprintf("slow down: at most %g requests per second", rate))
	return false
}

// send encodes v and sends it to c alone.
func (h *Hub) send(c *client, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		h.log.Error("encoding a chat message", "err", err)
		return
	}
	_ = h.ep.Send(c.id, engine.Text, b) // the client may have just left
}

// fail sends an error answering req (nil: a request that could not be
// read).
func (h *Hub) fail(c *client, req *Request, code, msg string) {
	h.stats.countError(code)
	e := Error{Type: "error", Code: code, Message: msg}
	if req != nil {
		e.Request = &ReqInfo{Type: req.Type, ID: req.ID, Room: req.Room}
	}
	h.send(c, e)
}

// now returns the server time in Unix milliseconds.
func now() int64 { return time.Now().UnixMilli() }

// text checks a message's text.
func (h *Hub) text(c *client, req *Request) bool {
	switch {
	case strings.TrimSpace(req.Text) == "":
		h.fail(c, req, ErrEmpty, "the message is empty")
	case len(req.Text) > h.cfg.MaxTextLength:
		h.fail(c, req, ErrTooLong, fmt.Sprintf("messages are at most %d bytes", h.cfg.MaxTextLength))
	default:
		return true
	}
	return false
}

func (h *Hub) say(c *client, req *Request) {
	r := c.room(req.Room)
	if r == nil {
		h.fail(c, req, ErrNotInRoom, fmt.Sprintf("join %q before saying something there", req.Room))
		return
	}
	if !h.text(c, req) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	b, err := json.Marshal(Message{Type: "message", Room: r.name, Seq: r.seq, From: c.nick, Text: req.Text, TS: now()})
	if err != nil {
		r.seq--
		h.log.Error("encoding a chat message", "err", err)
		return
	}
	r.appendHistory(b)
	if err := h.broker.Publish(r.name, b); err != nil {
		h.log.Warn("publishing a room message", "room", r.name, "err", err)
		return
	}
	h.stats.published.Add(1)
}

// HandlePublication implements BrokerHandler: a room message goes to the
// room's local members, encoded once.
func (h *Hub) HandlePublication(roomName string, data []byte) {
	h.stats.received.Add(1)
	v, ok := h.rooms.Load(roomName)
	if !ok {
		return
	}
	_, _ = v.(*room).group.Send(engine.Text, data)
}

// roomFor returns the live room called name, making it if needed, with its
// lock held.
func (h *Hub) roomFor(name string) (*room, error) {
	for {
		v, ok := h.rooms.Load(name)
		if !ok {
			nr := newRoom(name, h.ep.NewGroup(), h.cfg.HistorySize)
			if v, ok = h.rooms.LoadOrStore(name, nr); !ok {
				if err := h.broker.Subscribe(name); err != nil {
					h.rooms.CompareAndDelete(name, nr)
					return nil, err
				}
			}
		}
		r := v.(*room)
		r.mu.Lock()
		if !r.removed {
			return r, nil
		}
		r.mu.Unlock() // expired meanwhile: make a new one
	}
}

func (h *Hub) join(c *client, req *Request) {
	if err := validRoom(req.Room); err != nil {
		h.fail(c, req, ErrBadRoom, "room name "+err.Error())
		return
	}
	if c.room(req.Room) == nil && len(c.rooms) >= h.cfg.MaxRooms {
		h.fail(c, req, ErrTooManyRooms, fmt.Sprintf("a client is in at most %d rooms", h.cfg.MaxRooms))
		return
	}
	r, err := h.roomFor(req.Room)
	if err != nil {
		h.log.Warn("subscribing to a room", "room", req.Room, "err", err)
		h.fail(c, req, ErrBadRoom, "the room is not available")
		return
	}
	defer r.mu.Unlock()
	_, already := r.members[c.id]
	r.members[c.id] = c.nick
	r.emptySince = time.Time{}
	if len(r.members) > h.cfg.LargeRoom {
		// A sample of a huge room, the same for every joiner for a while.
		sample := r.largeSample(min(h.cfg.PresenceListMax, largeRoomSample), h.cfg.LargeRoomCounts, time.Now())
		h.send(c, joinedLarge{Type: "join", Room: r.name, Nick: c.nick, Count: len(r.members), Members: sample,
			Truncated: true, Seq: r.seq, Epoch: h.epoch})
	} else {
		members, truncated := r.memberSample(h.cfg.PresenceListMax)
		h.send(c, Joined{Type: "join", Room: r.name, Nick: c.nick, Count: len(r.members), Members: members,
			Truncated: truncated, Seq: r.seq, Epoch: h.epoch})
	}
	after := int64(-1) // whole history
	if req.Since != nil {
		after = *req.Since
	}
	msgs, gap := r.history(after, 0, h.cfg.HistorySize)
	h.send(c, History{Type: "history", Room: r.name, Messages: nonNil(msgs), Gap: gap})
	if already {
		return
	}
	// Added after the history was queued, under the room's lock: every
	// later message follows the history, none is missed or repeated.
	_ = r.group.Add(c.id)
	c.rooms = append(c.rooms, r)
	r.joined = append(r.joined, c.nick)
	h.markDirty(r)
}

func nonNil(m []json.RawMessage) []json.RawMessage {
	if m == nil {
		return []json.RawMessage{}
	}
	return m
}

func (h *Hub) leave(c *client, req *Request) {
	r := c.room(req.Room)
	if r == nil {
		h.fail(c, req, ErrNotInRoom, fmt.Sprintf("not in room %q", req.Room))
		return
	}
	h.leaveRoom(c, r)
	h.send(c, Left{Type: "leave", Room: r.name})
}

func (h *Hub) leaveRoom(c *client, r *room) {
	r.mu.Lock()
	delete(r.members, c.id)
	_ = r.group.Remove(c.id)
	r.left = append(r.left, c.nick)
	if len(r.members) == 0 {
		r.emptySince = time.Now()
	}
	h.markDirty(r)
	r.mu.Unlock()
	c.rooms = slices.DeleteFunc(c.rooms, func(x *room) bool { return x == r })
}

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
	for {
		select {
		case <-h.stop:
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
			h.sweep(now)
		}
	}
}

// requeue puts r back on the dirty list.
func (h *Hub) requeue(r *room) {
	h.dirtyMu.Lock()
	h.dirty = append(h.dirty, r)
	h.dirtyMu.Unlock()
}

// flushPresence sends r's presence changes as one message to its members.
// It reports false when a large room's count must wait (r stays dirty).
func (h *Hub) flushPresence(r *room, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := Presence{Type: "presence", Room: r.name, Count: len(r.members)}
	if p.Count > h.cfg.LargeRoom && now.Sub(r.lastSent) < h.cfg.LargeRoomCounts {
		return false
	}
	r.dirty = false
	if p.Count <= h.cfg.LargeRoom {
		p.Joined, p.Left, p.Renamed = r.joined, r.left, r.renamed
	} else if p.Count == r.lastCount {
		p.Count = -1 // nothing to tell a large room
	}
	r.joined, r.left, r.renamed = nil, nil, nil
	if p.Count <= 0 {
		return true
	}
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

// sweep removes rooms that have been empty for HistoryTTL.
func (h *Hub) sweep(now time.Time) {
	h.rooms.Range(func(k, v any) bool {
		r := v.(*room)
		r.mu.Lock()
		expired := len(r.members) == 0 && !r.emptySince.IsZero() && now.Sub(r.emptySince) >= h.cfg.HistoryTTL
		if expired {
			r.removed = true
			h.rooms.CompareAndDelete(k, r)
		}
		r.mu.Unlock()
		if expired {
			if err := h.broker.Unsubscribe(r.name); err != nil {
				h.log.Warn("unsubscribing from a room", "room", r.name, "err", err)
			}
		}
		return true
	})
}

func (h *Hub) nick(c *client, req *Request) {
	if err := validNick(req.Nick); err != nil {
		h.fail(c, req, ErrBadNick, "nick "+err.Error())
		return
	}
	if strings.HasPrefix(strings.ToLower(req.Nick), "guest-") && !strings.EqualFold(req.Nick, c.nick) {
		h.fail(c, req, ErrBadNick, `nicks starting with "guest-" are given by the server`)
		return
	}
	key := strings.ToLower(req.Nick)
	h.nickMu.Lock()
	if holder, taken := h.nicks[key]; taken && holder != c.id {
		h.nickMu.Unlock()
		h.fail(c, req, ErrNickTaken, fmt.Sprintf("%q is taken", req.Nick))
		return
	}
	old := c.nick
	delete(h.nicks, strings.ToLower(old))
	h.nicks[key] = c.id
	c.nick = req.Nick
	h.nickMu.Unlock()
	for _, r := range c.rooms {
		r.mu.Lock()
		r.members[c.id] = c.nick
		r.renamed = append(r.renamed, Renamed{From: old, To: c.nick})
		h.markDirty(r)
		r.mu.Unlock()
	}
	h.send(c, NickChanged{Type: "nick", Nick: c.nick, Old: old})
}

func (h *Hub) dm(c *client, req *Request) {
	if !h.text(c, req) {
		return
	}
	var toNick string
	h.nickMu.Lock() // nicks change under nickMu: the recipient's stays put while read
	to, ok := h.nicks[strings.ToLower(req.To)]
	if rc := h.client(to); ok && rc != nil {
		toNick = rc.nick
	} else {
		ok = false
	}
	h.nickMu.Unlock()
	if !ok {
		h.fail(c, req, ErrUnknownNick, fmt.Sprintf("nobody is called %q", req.To))
		return
	}
	b, err := json.Marshal(DM{Type: "dm", From: c.nick, To: toNick, Text: req.Text, TS: now()})
	if err != nil {
		h.log.Error("encoding a dm", "err", err)
		return
	}
	// Recipient and sender; to yourself, one copy (Multicast sends each id once).
	_, _ = h.ep.Multicast([]engine.ClientID{to, c.id}, engine.Text, b)
	h.stats.dms.Add(1)
}

func (h *Hub) history(c *client, req *Request) {
	r := c.room(req.Room)
	if r == nil {
		h.fail(c, req, ErrNotInRoom, fmt.Sprintf("join %q to read its history", req.Room))
		return
	}
	limit := req.Limit
	if limit <= 0 || limit > h.cfg.HistorySize {
		limit = h.cfg.HistorySize
	}
	r.mu.Lock()
	msgs, _ := r.history(-1, req.Before, limit)
	r.mu.Unlock()
	h.send(c, History{Type: "history", Room: r.name, Messages: nonNil(msgs)})
}

func (h *Hub) typing(c *client, req *Request) {
	r := c.room(req.Room)
	if r == nil {
		h.fail(c, req, ErrNotInRoom, fmt.Sprintf("not in room %q", req.Room))
		return
	}
	now := time.Now().UnixNano()
	if now-c.lastTyping < int64(time.Second) {
		return // at most one typing notice per second
	}
	c.lastTyping = now
	b, _ := json.Marshal(Typing{Type: "typing", Room: r.name, Nick: c.nick})
	_, _ = r.group.Send(engine.Text, b, c.id)
}
