package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	node   string // the broker's name for this node; "" alone
	ep     *engine.Endpoint

	clients [clientShards]struct {
		sync.RWMutex
		m map[engine.ClientID]*client
	}
	nickMu sync.Mutex
	nicks  map[string]engine.ClientID // by nick key (nickKey: two look-alikes share one)

	rooms     sync.Map     // name -> *room; lock-free reads
	roomCount atomic.Int64 // rooms in the map (MaxRoomsTotal)
	roomLocks nameLocks    // per name: orders making and removing a room with the broker's Subscribe and Unsubscribe
	dirtyMu   sync.Mutex
	dirty     []*room // rooms with presence changes to send

	epoch int64 // when the hub was made, Unix ms

	users    users // signed-in users' clients, by user id
	rules    rules // bans, mutes, invitations
	expMu    sync.Mutex
	expiries expiry // users' token expiries

	brokerLog rateLog // broker failures: an outage fails thousands of calls, logged once a second
	stats     hubStats
	stop      chan struct{}
	wg        sync.WaitGroup
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
	who   *identity // a signed-in user's; nil for a guest (replaced under Hub.nickMu by a refresh)
	rooms []*room   // at most MaxRooms: a slice costs far less per client than a map

	// Rate limiting. float32: a guest's client stays in the 96-byte size
	// class.
	tokens, strikes float32
	creates         float64 // room-creation tokens (RoomCreateRate)
	createdAt       int64   // unix ns of the last refill
	last            int64   // unix ns of the last request
	lastTyping      int64
}

// mayCreate takes a room-creation token: c may make rate rooms a minute,
// in bursts of as many.
func (c *client) mayCreate(rate float64, now time.Time) bool {
	if rate < 0 {
		return true
	}
	t := now.UnixNano()
	if c.createdAt == 0 {
		c.creates = rate
	} else {
		c.creates = min(rate, c.creates+float64(t-c.createdAt)/float64(time.Minute)*rate)
	}
	c.createdAt = t
	if c.creates < 1 {
		return false
	}
	c.creates--
	return true
}

// userID is the client's user id: its token's sub, "" for a guest.
func (c *client) userID() string {
	if c.who == nil {
		return ""
	}
	return c.who.user
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
	h.users.m = make(map[string][]engine.ClientID)
	h.rules.m = make(map[string]Rule)
	return h, nil
}

// OnStart implements engine.Application.
func (h *Hub) OnStart(ep *engine.Endpoint) error {
	h.ep = ep
	if err := h.broker.Run(h); err != nil {
		return fmt.Errorf("chat: start broker: %w", err)
	}
	h.node = h.broker.Node()
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

func (h *Hub) client(id engine.ClientID) *client {
	s := &h.clients[id%clientShards]
	s.RLock()
	defer s.RUnlock()
	return s.m[id]
}

// OnOpen implements engine.Application: a guest gets a guest nick, a user
// its token's; then a welcome, and the room of the handshake.
func (h *Hub) OnOpen(id engine.ClientID, data any) {
	sess, _ := data.(*session)
	if sess == nil {
		sess = &session{room: h.cfg.DefaultRoom}
	}
	c := &client{id: id, tokens: float32(h.cfg.RateBurst), last: time.Now().UnixNano()}
	w := Welcome{Type: "welcome", ID: uint64(id), Room: sess.room, Epoch: h.epoch, Limits: Limits{
		MaxTextLength: h.cfg.MaxTextLength, MaxRooms: h.cfg.MaxRooms, MaxNickLength: MaxNickLength,
		RatePerSecond: h.cfg.RateLimit, RateBurst: h.cfg.RateBurst, HistorySize: h.cfg.HistorySize,
	}}
	if u := sess.id; u != nil {
		// A user's nick is its token's, on every connection and node: it
		// is not claimed (guests cannot pick nicks beside users).
		c.nick = u.Nick
		c.who = identityOf(u)
		w.User, w.Expires = u.User, u.Expires.UnixMilli()
	} else {
		h.nickMu.Lock()
		c.nick = h.guestNick(id)
		h.nicks[keyOf(c.nick)] = id
		h.nickMu.Unlock()
	}
	// A guest that asked for a nick (?nick=) has it before the welcome
	// and its first join: a page that reconnects comes back as itself,
	// not as guest-N renamed. If it cannot have it, it says so after the
	// welcome.
	var refused *Error
	if sess.nick != "" {
		if _, code, msg := h.setNick(c, sess.nick); code != "" {
			refused = &Error{Type: "error", Code: code, Message: msg, Request: &ReqInfo{Type: TypeNick}}
		}
	}
	w.Nick = c.nick
	s := &h.clients[id%clientShards]
	s.Lock()
	s.m[id] = c
	s.Unlock()
	if c.who != nil {
		h.addUser(c.who.user, id)
		h.watchExpiry(id, c.who.expires)
	}
	h.send(c, w)
	if refused != nil {
		h.stats.countError(refused.Code)
		h.send(c, *refused)
	}
	h.join(c, &Request{Type: TypeJoin, Room: sess.room})
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
	if c.userID() != "" {
		h.removeUser(c.userID(), id)
		s := &h.clients[id%clientShards]
		s.Lock()
		delete(s.m, id)
		s.Unlock()
		return
	}
	key := keyOf(c.nick)
	h.nickMu.Lock()
	if h.nicks[key] == id {
		delete(h.nicks, key)
	}
	h.nickMu.Unlock()
	if !isGuest(key) {
		if err := h.broker.ReleaseNick(key, h.owner(id, c.nick)); err != nil {
			h.log.Warn("releasing a nick", "nick", c.nick, "err", err)
		}
	}
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
	if !looksLikeJSON(data) {
		// Plain text, as the seed's clients send: say it in the default room.
		req = Request{Type: TypeSay, Room: h.cfg.DefaultRoom, Text: string(data)}
	} else if err := decodeStrict(data, &req); err != nil {
		// A request that does not decode is refused, never said as text:
		// a mistyped dm would otherwise reach the whole lobby.
		if h.allow(c, nil) {
			h.fail(c, nil, ErrBadRequest, "bad request: "+err.Error())
		}
		return
	}
	if !h.allow(c, &req) { // every request counts, typing notices too
		return
	}
	if !validID(req.ID) {
		h.fail(c, &req, ErrBadRequest, "a request's id is 1-64 letters, digits, '.', '_', ':' or '-'")
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
	case TypeAuth:
		h.refresh(c, &req)
	case "":
		h.fail(c, &req, ErrBadRequest, "a request needs a type")
	default:
		h.fail(c, &req, ErrUnknownType, fmt.Sprintf("unknown request type %q", req.Type))
	}
}

// looksLikeJSON reports whether b is meant as a request: its first
// non-blank byte opens a JSON object.
func looksLikeJSON(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// allow applies the client's token bucket to req (nil: a request that
// could not be read); a client that keeps pushing past RateHardLimit
// refusals is closed with 1008. The refusal names req, as errors do.
func (h *Hub) allow(c *client, req *Request) bool {
	rate := h.cfg.RateLimit
	if rate < 0 {
		return true
	}
	now := time.Now().UnixNano()
	elapsed := float64(now-c.last) / 1e9
	c.last = now
	c.tokens = float32(min(float64(h.cfg.RateBurst), float64(c.tokens)+elapsed*rate))
	c.strikes = float32(max(0, float64(c.strikes)-elapsed*rate))
	if c.tokens >= 1 {
		c.tokens--
		return true
	}
	c.strikes++
	h.stats.rateLimited.Add(1)
	if float64(c.strikes) > float64(h.cfg.RateHardLimit) {
		_ = h.ep.Close(c.id, engine.StatusPolicyViolation, "rate limit exceeded")
		return false
	}
	h.fail(c, req, ErrRateLimited, fmt.Sprintf("slow down: at most %g requests per second", rate))
	return false
}

// marshal encodes v as JSON without escaping <, > and & (json.Marshal
// makes six bytes of each, so a text of 2,000 '<' took 12 KB in every
// history and on every wire; the page never parses messages as HTML).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// send encodes v and sends it to c alone.
func (h *Hub) send(c *client, v any) {
	b, err := marshal(v)
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

// rateLog lets a log line through at most once a second.
type rateLog struct{ last atomic.Int64 }

func (l *rateLog) allow(now time.Time) bool {
	last := l.last.Load()
	return now.UnixNano()-last >= int64(time.Second) && l.last.CompareAndSwap(last, now.UnixNano())
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
	case strings.ContainsFunc(req.Text, badTextRune):
		h.fail(c, req, ErrBadText, "text may not hold control characters (but tab and newline) or bidi embeddings, overrides or isolates")
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
	if code, msg := h.maySay(c, r.name); code != "" {
		h.fail(c, req, code, msg)
		return
	}
	// The broker numbers the message and hands it to every node with
	// members in the room, this one included (HandleMessage).
	b, err := marshal(published{From: c.nick, User: c.userID(), Text: req.Text, TS: now(), ID: req.ID})
	if err != nil {
		h.log.Error("encoding a chat message", "err", err)
		return
	}
	id, info := c.id, *req
	h.broker.Publish(r.name, b, req.ID, func(err error) {
		if err == nil {
			h.stats.published.Add(1)
			return
		}
		if n := h.stats.publishFailed.Add(1); h.brokerLog.allow(time.Now()) {
			h.log.Warn("room messages not delivered", "room", info.Room, "err", err, "total", n)
		}
		if c := h.client(id); c != nil {
			h.fail(c, &info, ErrNotDelivered, "the message could not be delivered: "+err.Error())
		}
	})
}

// published is a room message as the broker carries it: the Message
// without the fields each node adds (type, room, seq).
type published struct {
	From   string `json:"from"`
	User   string `json:"user,omitempty"`
	System bool   `json:"system,omitempty"`
	Text   string `json:"text"`
	TS     int64  `json:"ts"`
	ID     string `json:"id,omitempty"`
}

// check refuses what no client of this server could have published: a
// message from the bus is held to the rules its sender was.
func (p *published) check(h *Hub) error {
	if err := h.checkBusText(p.Text); err != nil {
		return err
	}
	switch {
	case p.TS <= 0:
		return errors.New("no time")
	case !validID(p.ID):
		return fmt.Errorf("bad id %q", p.ID)
	case p.User != "" && validUser(p.User) != nil:
		return fmt.Errorf("bad user: %w", validUser(p.User))
	case p.System != (p.From == systemNick):
		return fmt.Errorf("%q with system %v", p.From, p.System)
	case p.System:
		return nil
	}
	if shown, err := normalizeNick(p.From); err != nil || shown != p.From {
		return fmt.Errorf("bad sender %q", p.From)
	}
	return nil
}

// systemNick is the sender of the server API's messages (System set):
// no client may take it.
const systemNick = "system"

// systemKey is keyOf(systemNick) (its TR 39 skeleton reads m as rn):
// look-alikes of "system" are refused too.
const systemKey = "systern"

// sanitize checks a room message from the broker: decoded strictly (no
// key but published's, none twice, valid UTF-8, one object and nothing
// after it), it holds only fields a node sets, so a message injected on
// the bus cannot carry a type, room or seq of its own, and the fields hold
// what a client's say could. What passes is spliced as it came (room.encode
// puts the server's fields first); what does not is dropped and counted.
func (h *Hub) sanitize(room string, msg []byte) ([]byte, bool) {
	var p published
	err := decodeStrict(msg, &p)
	if err == nil {
		err = p.check(h)
	}
	if err != nil {
		h.dropped("message", fmt.Errorf("room %q: %w", room, err))
		return nil, false
	}
	return bytes.TrimSpace(msg), true // one object: '{' ... '}' once trimmed
}

// validID checks a say's id, which the broker uses to drop a message
// resent after a reconnect: empty (no id), or 1-64 of [A-Za-z0-9._:-].
func validID(id string) bool {
	if len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:-", c) >= 0) {
			return false
		}
	}
	return true
}

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
	msg, ok := h.sanitize(roomName, msg)
	if !ok {
		return
	}
	b, _ := r.encode(seq, msg)
	r.appendHistory(seq, b, time.Now().UnixNano())
	_, _ = r.group.Send(engine.Text, b)
}

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
	b, _ := json.Marshal(Reset{Type: "reset", Room: r.name, Epoch: r.epoch, Seq: r.seq})
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
	for _, m := range st.Messages {
		if msg, ok := h.sanitize(r.name, m.Data); ok {
			b, _ := r.encode(m.Seq, msg)
			at := m.Time
			if at <= 0 || at > now {
				at = now
			}
			r.appendHistory(m.Seq, b, at)
		}
	}
	r.trimHistory(now)
}

// Errors of making a room.
var (
	errRoomLimit   = errors.New("chat: the server has as many rooms as it holds")
	errCreateLimit = errors.New("chat: the client made too many rooms lately")
)

// roomFor returns the live room called name, making it if needed (on c's
// account: c nil for the server's own rooms), with its lock held.
func (h *Hub) roomFor(name string, c *client) (*room, error) {
	for {
		v, ok := h.rooms.Load(name)
		if !ok {
			if c != nil && !c.mayCreate(h.cfg.RoomCreateRate, time.Now()) {
				return nil, errCreateLimit
			}
			if h.roomCount.Load() >= int64(h.cfg.MaxRoomsTotal) {
				h.evictEmptyRoom() // the oldest empty room goes before any new one is refused
			}
			r, made, err := h.makeRoom(name)
			if !made && c != nil {
				c.creates++ // nothing made on its account
			}
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

// makeRoom makes the room called name and subscribes to it, unless another
// goroutine made it first (made false). The room is returned locked.
//
// The broker's round trips are made holding no lock but the name's: other
// rooms are made meanwhile, and the broker's calls for this one
// (presence, messages, a reset) do not wait for them. Joiners of the
// room wait on its loading channel (roomFor).
func (h *Hub) makeRoom(name string) (_ *room, made bool, _ error) {
	unlock := h.roomLocks.lock(name)
	defer unlock()
	if !h.reserveRoom() {
		return nil, false, errRoomLimit
	}
	nr := newRoom(name, h.ep.NewGroup(), h.historyLimits())
	if _, loaded := h.rooms.LoadOrStore(name, nr); loaded {
		h.roomCount.Add(-1)
		return nil, false, nil
	}
	st, err := h.broker.Subscribe(name)
	nr.mu.Lock()
	if err != nil {
		nr.removed = true
		h.rooms.CompareAndDelete(name, nr)
		h.roomCount.Add(-1)
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
	close(nr.loading)
	if h.node != "" {
		// Ask the other nodes who of theirs is here.
		nr.asked = true
		if err := h.broker.PublishPresence(name, []byte(`{"count":0,"want":true}`)); err != nil {
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

func (h *Hub) join(c *client, req *Request) {
	if err := validRoom(req.Room); err != nil {
		h.fail(c, req, ErrBadRoom, "room name "+err.Error())
		return
	}
	if c.room(req.Room) == nil && len(c.rooms) >= h.cfg.MaxRooms {
		h.fail(c, req, ErrTooManyRooms, fmt.Sprintf("a client is in at most %d rooms", h.cfg.MaxRooms))
		return
	}
	if err := h.mayJoinNow(c, req.Room); err != nil {
		h.fail(c, req, ErrForbidden, err.Error())
		return
	}
	r, err := h.roomFor(req.Room, c)
	switch {
	case errors.Is(err, errCreateLimit):
		h.fail(c, req, ErrRateLimited, fmt.Sprintf("a client may make at most %g new rooms a minute", h.cfg.RoomCreateRate))
		return
	case errors.Is(err, errRoomLimit):
		h.fail(c, req, ErrRoomLimit, fmt.Sprintf("the server holds at most %d rooms, none of them empty", h.cfg.MaxRoomsTotal))
		return
	case err != nil:
		if h.brokerLog.allow(time.Now()) {
			h.log.Warn("subscribing to a room", "room", req.Room, "err", err)
		}
		h.fail(c, req, ErrBadRoom, "the room is not available")
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
		h.send(c, joinedLarge{Type: "join", Room: r.name, Nick: c.nick, Count: count, Members: sample,
			Truncated: true, Seq: r.seq, Epoch: r.epoch})
	} else {
		members, truncated := r.memberSample(h.cfg.PresenceListMax)
		h.send(c, Joined{Type: "join", Room: r.name, Nick: c.nick, Count: count, Members: members,
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
	h.send(c, History{Type: "history", Room: r.name, Messages: nonNil(msgs), Gap: gap})
	if already {
		return
	}
	// Added after the history was queued, under the room's lock: every
	// later message follows the history, none is missed or repeated.
	_ = r.group.Add(c.id)
	c.rooms = append(c.rooms, r)
	if news {
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
	if r.removeMember(c.userID()) {
		r.left = append(r.left, c.nick)
		h.markDirty(r)
	}
	if len(r.members) == 0 {
		r.emptySince = time.Now()
	}
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
	var lastSweep time.Time
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
			h.expire(now)
			if now.Sub(lastSweep) >= time.Second {
				lastSweep = now
				h.sweep(now)
				h.sweepRules(now)
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
	r.mu.Lock()
	defer r.mu.Unlock()
	total, local := r.count(), r.local()
	large := total > h.cfg.LargeRoom
	if large && now.Sub(r.lastSent) < h.cfg.LargeRoomCounts || !large && now.Before(r.nextPresence) {
		return false
	}
	r.dirty = false
	if h.node != "" {
		h.publishPresence(r, local, large)
	}
	p := Presence{Type: "presence", Room: r.name, Count: total}
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
	Count     int       `json:"count"`                // the node's members in the room
	CountOnly bool      `json:"count_only,omitempty"` // a large room: the node's nicks are not told
	Full      bool      `json:"full,omitempty"`       // Joined lists all the node's members
	Want      bool      `json:"want,omitempty"`       // the sender asks for every node's full list
	Joined    []string  `json:"joined,omitempty"`
	Left      []string  `json:"left,omitempty"`
	Renamed   []Renamed `json:"renamed,omitempty"`
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
		err = h.broker.PublishPresence(r.name, b)
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

// evictEmptyRoom removes the room that has been empty longest, if any.
func (h *Hub) evictEmptyRoom() {
	var oldest *room
	var since time.Time
	h.rooms.Range(func(_, v any) bool {
		r := v.(*room)
		r.mu.Lock()
		if len(r.members) == 0 && !r.emptySince.IsZero() && (oldest == nil || r.emptySince.Before(since)) {
			oldest, since = r, r.emptySince
		}
		r.mu.Unlock()
		return true
	})
	if oldest != nil {
		h.removeRoom(oldest)
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
	}
	r.mu.Unlock()
	if err := h.broker.Unsubscribe(r.name); err != nil {
		h.log.Warn("unsubscribing from a room", "room", r.name, "err", err)
	}
}

func (h *Hub) nick(c *client, req *Request) {
	old, code, msg := h.setNick(c, req.Nick)
	if code != "" {
		h.fail(c, req, code, msg)
		return
	}
	for _, r := range c.rooms {
		r.mu.Lock()
		r.members[c.id] = c.nick
		r.renamed = append(r.renamed, Renamed{From: old, To: c.nick})
		h.markDirty(r)
		r.mu.Unlock()
	}
	h.send(c, NickChanged{Type: "nick", Nick: c.nick, Old: old})
}

// setNick checks and claims want for c (cluster-wide) and returns c's old
// nick, or the error code and message refusing it. The rooms are the
// caller's to tell.
func (h *Hub) setNick(c *client, want string) (old, code, msg string) {
	switch {
	case c.userID() != "":
		return "", ErrForbidden, "a signed-in user's nick is its token's"
	case h.cfg.Verifier != nil:
		return "", ErrForbidden, "guests keep their guest nick on a server with signed-in users"
	}
	shown, err := normalizeNick(want)
	if err != nil {
		return "", ErrBadNick, "nick " + err.Error()
	}
	key, oldKey := keyOf(shown), keyOf(c.nick)
	if isGuest(key) && key != oldKey {
		return "", ErrBadNick, `nicks starting with "guest-" are given by the server`
	}
	if key == systemKey {
		return "", ErrBadNick, `"system" signs the server's own messages`
	}
	h.nickMu.Lock()
	holder, taken := h.nicks[key]
	h.nickMu.Unlock()
	if taken && holder != c.id {
		return "", ErrNickTaken, fmt.Sprintf("%q is taken", shown)
	}
	// The cluster-wide claim (the broker's); a new spelling of the same
	// key (another case, a look-alike of one's own nick) only re-claims
	// the key with it, and takes the old one back if that fails.
	if !isGuest(key) {
		caseOnly := key == oldKey
		if caseOnly {
			_ = h.broker.ReleaseNick(key, h.owner(c.id, c.nick))
		}
		if err := h.broker.ClaimNick(key, h.owner(c.id, shown)); err != nil {
			if caseOnly {
				_ = h.broker.ClaimNick(key, h.owner(c.id, c.nick))
			}
			if errors.Is(err, ErrNickClaimed) {
				return "", ErrNickTaken, fmt.Sprintf("%q is taken", shown)
			}
			h.log.Warn("claiming a nick", "nick", shown, "err", err)
			return "", ErrUnavailable, "nicks cannot be changed right now: " + err.Error()
		}
	}
	h.nickMu.Lock()
	if holder, taken := h.nicks[key]; taken && holder != c.id {
		h.nickMu.Unlock() // another client here got it meanwhile (and the claim is theirs)
		return "", ErrNickTaken, fmt.Sprintf("%q is taken", shown)
	}
	old = c.nick
	delete(h.nicks, oldKey)
	h.nicks[key] = c.id
	c.nick = shown
	h.nickMu.Unlock()
	if key != oldKey && !isGuest(oldKey) {
		if err := h.broker.ReleaseNick(oldKey, h.owner(c.id, old)); err != nil {
			h.log.Warn("releasing a nick", "nick", old, "err", err)
		}
	}
	return old, "", ""
}

// guestNick is the nick a client starts with: unique in the cluster, since
// it holds the node's name and the client's id there.
func (h *Hub) guestNick(id engine.ClientID) string {
	if h.node == "" {
		return "guest-" + strconv.FormatUint(uint64(id), 10)
	}
	return "guest-" + h.node + "-" + strconv.FormatUint(uint64(id), 10)
}

// isGuest reports whether the nick key is reserved for guests: a nick that
// only looks like "guest-..." (a Cyrillic e) has such a key too.
func isGuest(key string) bool { return strings.HasPrefix(key, "guest-") }

// owner is what the broker records for a nick: "node/id/nick".
func (h *Hub) owner(id engine.ClientID, nick string) string {
	return h.node + "/" + strconv.FormatUint(uint64(id), 10) + "/" + nick
}

// parseOwner splits an owner record.
func parseOwner(o string) (node string, id engine.ClientID, nick string, ok bool) {
	node, rest, ok1 := strings.Cut(o, "/")
	ids, nick, ok2 := strings.Cut(rest, "/")
	n, err := strconv.ParseUint(ids, 10, 64)
	return node, engine.ClientID(n), nick, ok1 && ok2 && err == nil
}

// locate finds the client holding the nick key anywhere in the cluster.
func (h *Hub) locate(key, asked string) (node string, id engine.ClientID, nick string, err error) {
	if isGuest(key) {
		// guest-<node>-<id>: no lookup needed. Read from the nick as
		// asked (ASCII; the key is its skeleton, where 1 reads as l).
		rest, found := strings.CutPrefix(strings.ToLower(asked), "guest-")
		i := strings.LastIndexByte(rest, '-')
		n, perr := strconv.ParseUint(rest[i+1:], 10, 64)
		if !found || i <= 0 || perr != nil {
			return "", 0, "", ErrNickNotFound
		}
		return rest[:i], engine.ClientID(n), asked, nil
	}
	o, err := h.broker.LookupNick(key)
	if err != nil {
		return "", 0, "", err
	}
	node, id, nick, ok := parseOwner(o)
	if !ok {
		return "", 0, "", fmt.Errorf("chat: nick %q has a bad owner record %q", key, o)
	}
	return node, id, nick, nil
}

// direct is a DM on its way to the recipient's node.
type direct struct {
	To   engine.ClientID `json:"to"`
	Key  string          `json:"key"` // the recipient's nick key (nickKey) when sent
	From string          `json:"from"`
	Text string          `json:"text"`
	TS   int64           `json:"ts"`
}

func (h *Hub) dm(c *client, req *Request) {
	if !h.text(c, req) {
		return
	}
	switch {
	case req.User != "" && req.To != "":
		h.fail(c, req, ErrBadRequest, "a dm goes to a nick (to) or a user (user), not both")
		return
	case req.User != "":
		h.dmUser(c, req)
		return
	}
	key, err := nickKey(req.To)
	if err != nil {
		key = "" // no such nick: answered below as unknown
	}
	var toNick string
	h.nickMu.Lock() // nicks change under nickMu: the recipient's stays put while read
	to, ok := h.nicks[key]
	if rc := h.client(to); ok && rc != nil {
		toNick = rc.nick
	} else {
		ok = false
	}
	h.nickMu.Unlock()
	if ok {
		b, err := marshal(DM{Type: "dm", From: c.nick, To: toNick, Text: req.Text, TS: now()})
		if err != nil {
			h.log.Error("encoding a dm", "err", err)
			return
		}
		// Recipient and sender; to yourself, one copy (Multicast sends each id once).
		_, _ = h.ep.Multicast([]engine.ClientID{to, c.id}, engine.Text, b)
		h.stats.dms.Add(1)
		return
	}
	h.remoteDM(c, req, key)
}

// remoteDM sends a DM to a nick held on another node.
func (h *Hub) remoteDM(c *client, req *Request, key string) {
	node, to, toNick, err := h.locate(key, req.To)
	if err == nil && (h.node == "" || node == h.node) {
		err = ErrNickNotFound // a record left by a client of this node that has gone
	}
	if err != nil {
		if errors.Is(err, ErrNickNotFound) {
			h.fail(c, req, ErrUnknownNick, fmt.Sprintf("nobody is called %q", req.To))
		} else {
			h.log.Warn("looking a nick up", "nick", req.To, "err", err)
			h.fail(c, req, ErrUnavailable, "direct messages cannot be sent right now: "+err.Error())
		}
		return
	}
	d := direct{To: to, Key: key, From: c.nick, Text: req.Text, TS: now()}
	b, err := marshal(d)
	if err != nil {
		h.log.Error("encoding a dm", "err", err)
		return
	}
	// The recipient's node answers: the sender's copy, or the same errors
	// as for a nick on this node, follow its answer.
	asked := *req
	h.broker.SendDirect(node, b, func(err error) {
		switch {
		case err == nil:
			h.send(c, DM{Type: "dm", From: d.From, To: toNick, Text: d.Text, TS: d.TS})
			h.stats.dms.Add(1)
		case errors.Is(err, ErrNickNotFound), errors.Is(err, ErrNoNode): // a guest nick naming no live node
			h.fail(c, &asked, ErrUnknownNick, fmt.Sprintf("nobody is called %q", asked.To))
		default:
			h.fail(c, &asked, ErrNotDelivered, "the message could not be delivered: "+err.Error())
		}
	})
}

// HandleDirect implements BrokerHandler: a DM from another node goes to its
// recipient if the recipient still has that nick; else ErrNickNotFound.
func (h *Hub) HandleDirect(data []byte) error {
	var d direct
	err := decodeStrict(data, &d)
	if err == nil {
		err = h.checkBusText(d.Text)
	}
	if err == nil && (!isNick(d.From) || d.TS <= 0) {
		err = fmt.Errorf("bad sender %q or time", d.From)
	}
	if err != nil {
		h.dropped("direct", err)
		return err
	}
	c := h.client(d.To)
	if c == nil {
		return ErrNickNotFound
	}
	h.nickMu.Lock()
	nick := c.nick
	h.nickMu.Unlock()
	if keyOf(nick) != d.Key {
		return ErrNickNotFound // renamed since
	}
	h.send(c, DM{Type: "dm", From: d.From, To: nick, Text: d.Text, TS: d.TS})
	return nil
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
	if req.To != "" {
		h.typingDM(c, req)
		return
	}
	r := c.room(req.Room)
	if r == nil {
		h.fail(c, req, ErrNotInRoom, fmt.Sprintf("not in room %q", req.Room))
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
	b, _ := json.Marshal(Typing{Type: "typing", Room: r.name, Nick: c.nick})
	_, _ = r.group.Send(engine.Text, b, c.id)
}

// typingDM tells the client called req.To, on this node, that c is typing
// a DM to it (typing notices stay on their node, as in rooms). A nick
// nobody here holds is answered as a DM to it would be.
func (h *Hub) typingDM(c *client, req *Request) {
	if req.Room != "" {
		h.fail(c, req, ErrBadRequest, "typing goes to a room or to a nick (to), not both")
		return
	}
	key, err := nickKey(req.To)
	h.nickMu.Lock()
	to, ok := h.nicks[key]
	h.nickMu.Unlock()
	if err != nil || !ok || to == c.id {
		h.fail(c, req, ErrUnknownNick, fmt.Sprintf("nobody here is called %q", req.To))
		return
	}
	now := time.Now().UnixNano()
	if now-c.lastTyping < int64(time.Second) {
		return // at most one typing notice per second
	}
	c.lastTyping = now
	b, _ := json.Marshal(Typing{Type: "typing", Nick: c.nick})
	_ = h.ep.Send(to, engine.Text, b)
}
