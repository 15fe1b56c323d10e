package chat

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/cfgerr"
	"github.com/parleyhq/parley/protocol"
)

// clientShards is the number of stripes of the client map.
const clientShards = 64

// Hub is the chat: an engine.Application that keeps rooms, nicknames and
// history, and a BrokerHandler that fans room messages out to local
// members. Create it with New and mount it on an engine.Server.
type Hub struct {
	cfg      Config
	log      *slog.Logger
	broker   Broker
	presence PresenceManager
	node     string // the broker's name for this node; "" alone
	ep       *engine.Endpoint
	scratch  sync.Pool // *[]byte: encodings of room messages, copied into their frames

	clients [clientShards]struct {
		sync.RWMutex
		m map[engine.ClientID]*client
	}
	nickMu sync.Mutex
	nicks  map[string]engine.ClientID // by nick key (nickKey: two look-alikes share one)

	rooms     sync.Map     // name -> *room; lock-free reads
	roomCount atomic.Int64 // rooms in the map (MaxRoomsTotal)
	roomLocks nameLocks    // per name: orders making and removing a room with the broker's Subscribe and Unsubscribe
	creators  creators     // room-creation budgets and live rooms, per address and network
	dirtyMu   sync.Mutex
	dirty     []*room // rooms with presence changes to send
	reacted   []*room // rooms with reactions to send (reactions.go)

	notes notes       // unread notifications waiting for NotifyDelay
	reads ReadStore   // signed-in users' read positions; nil: none kept
	readQ chan func() // calls to reads, for the read workers

	epoch  int64    // when the hub was made, Unix ms
	sidKey [32]byte // keys guests' sender ids (sid); made at New

	users    users // signed-in users' clients, by user id
	rules    rules // bans, mutes, invitations
	expMu    sync.Mutex
	expiries expiry // users' token expiries

	brokerLog rateLog // broker failures: an outage fails thousands of calls, logged once a second
	stats     hubStats
	// ctx is the hub's life: its broker calls for clients wait within it,
	// and OnStop ends it (cancel), stopping its loops and those waits.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
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

	// Rate limiting. float32: a guest's client stays in the 80-byte size
	// class.
	tokens, strikes float32
	last            int64 // unix ns of the last request
	lastTyping      int64
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
		epoch: time.Now().UnixMilli()}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.scratch.New = func() any { b := make([]byte, 0, 512); return &b }
	if _, err := rand.Read(h.sidKey[:]); err != nil {
		return nil, fmt.Errorf("chat: a key for guests' sender ids: %w", err)
	}
	if h.broker == nil {
		h.broker = NewMemoryBroker()
	}
	h.presence = c.Presence
	if h.presence == nil {
		pm, ok := h.broker.(PresenceManager)
		if !ok {
			return nil, cfgerr.New("Presence", "chat: Presence is required: the Broker (%T) is no PresenceManager", h.broker)
		}
		h.presence = pm
	}
	for i := range h.clients {
		h.clients[i].m = make(map[engine.ClientID]*client)
	}
	h.users.m = make(map[string][]engine.ClientID)
	h.rules.m = make(map[string]Rule)
	h.reads = c.Reads
	if h.reads == nil {
		h.reads, _ = h.broker.(ReadStore)
	}
	h.readQ = make(chan func(), readJobs)
	return h, nil
}

// OnStart implements engine.Application.
func (h *Hub) OnStart(ep *engine.Endpoint) error {
	h.ep = ep
	if err := h.broker.Run(h); err != nil {
		return fmt.Errorf("chat: start broker: %w", err)
	}
	h.node = h.broker.Node()
	h.wg.Add(1 + readWorkers)
	go h.presenceLoop()
	for range readWorkers {
		go h.readWork()
	}
	return nil
}

// brokerCloseTimeout bounds the broker's Close at OnStop.
const brokerCloseTimeout = 5 * time.Second

// OnStop implements engine.Application.
func (h *Hub) OnStop() {
	h.cancel()
	h.wg.Wait()
	h.stopNotes()
	ctx, cancel := context.WithTimeout(context.Background(), brokerCloseTimeout)
	defer cancel()
	if err := h.broker.Close(ctx); err != nil {
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
	w := protocol.Welcome{Type: protocol.EventWelcome, ID: uint64(id), Room: sess.room, Epoch: h.epoch, Limits: protocol.Limits{
		MaxTextLength: h.cfg.MaxTextLength, MaxRooms: h.cfg.MaxRooms, MaxNickLength: MaxNickLength,
		RatePerSecond: h.cfg.RateLimit, RateBurst: h.cfg.RateBurst, HistorySize: h.cfg.HistorySize,
		EditWindow: max(-1, h.cfg.EditWindow.Milliseconds()),
	}}
	if u := sess.id; u != nil {
		// A user's nick is its token's, on every connection and node: it
		// is not claimed (guests cannot pick nicks beside users).
		c.nick = u.Nick
		c.who = identityOf(u)
		w.User, w.Expires = u.User, unixMilli(u.Expires)
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
	var refused *protocol.Error
	if sess.nick != "" {
		if _, code, msg := h.setNick(c, sess.nick); code != "" {
			refused = &protocol.Error{Type: protocol.EventError, Code: code, Message: msg, Request: &protocol.ReqInfo{Type: protocol.TypeNick}}
		}
	}
	w.Nick, w.SID = c.nick, h.sid(c)
	s := &h.clients[id%clientShards]
	s.Lock()
	s.m[id] = c
	s.Unlock()
	if c.who != nil {
		h.addUser(c.who.user, c.nick, id)
		h.watchExpiry(id, c.who.expires)
	}
	// A ban put in force after the handshake's check and before the
	// client was registered found no client to close: this one closes
	// itself (HandleRule stores a rule before it looks for its clients).
	if h.bannedClient(c) {
		_ = h.ep.Close(id, engine.StatusCode(protocol.CloseBanned), protocol.ReasonBanned)
		return
	}
	h.send(c, w)
	if refused != nil {
		h.stats.countError(string(refused.Code))
		h.send(c, *refused)
	}
	h.join(c, &protocol.Request{Type: protocol.TypeJoin, Room: sess.room})
}

// OnClose implements engine.Application: the client leaves its rooms and
// frees its nick.
func (h *Hub) OnClose(id engine.ClientID, _ engine.StatusCode, _ string) {
	c := h.client(id)
	if c == nil {
		return
	}
	for len(c.rooms) > 0 {
		h.leaveRoom(c, c.rooms[len(c.rooms)-1], true)
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
		if err := h.presence.ReleaseNick(h.ctx, key, h.owner(id, c.nick)); err != nil {
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
		h.fail(c, nil, protocol.CodeBinary, "binary messages are not part of the chat protocol")
		return
	}
	var req protocol.Request
	if !looksLikeJSON(data) {
		// Plain text, as the seed's clients send: say it in the default room.
		req = protocol.Request{Type: protocol.TypeSay, Room: h.cfg.DefaultRoom, Text: string(data)}
	} else if err := decodeStrict(data, &req); err != nil {
		// A request that does not decode is refused, never said as text:
		// a mistyped dm would otherwise reach the whole lobby.
		if h.allow(c, nil) {
			h.fail(c, nil, protocol.CodeBadRequest, "bad request: "+err.Error())
		}
		return
	}
	if !h.allow(c, &req) { // every request counts, typing notices too
		return
	}
	if !validID(req.ID) {
		h.fail(c, &req, protocol.CodeBadRequest, "a request's id is 1-64 letters, digits, '.', '_', ':' or '-'")
		return
	}
	switch req.Type {
	case protocol.TypeSay:
		h.say(c, &req)
	case protocol.TypeJoin:
		h.join(c, &req)
	case protocol.TypeLeave:
		h.leave(c, &req)
	case protocol.TypeNick:
		h.nick(c, &req)
	case protocol.TypeDM:
		h.dm(c, &req)
	case protocol.TypeHistory:
		h.history(c, &req)
	case protocol.TypeTyping:
		h.typing(c, &req)
	case protocol.TypeAuth:
		h.refresh(c, &req)
	case protocol.TypeEdit:
		h.edit(c, &req)
	case protocol.TypeDelete:
		h.del(c, &req)
	case protocol.TypeRead:
		h.read(c, &req)
	case protocol.TypeReact:
		h.react(c, &req)
	case protocol.TypeRooms:
		h.listRooms(c, &req)
	case protocol.TypeSearch:
		h.searchRoom(c, &req)
	case "":
		h.fail(c, &req, protocol.CodeBadRequest, "a request needs a type")
	default:
		h.fail(c, &req, protocol.CodeUnknownType, fmt.Sprintf("unknown request type %q", req.Type))
	}
}

// looksLikeJSON reports whether b is meant as a request: its first
// non-blank byte opens a JSON object.
func looksLikeJSON(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
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
func (h *Hub) fail(c *client, req *protocol.Request, code protocol.Code, msg string) {
	h.stats.countError(string(code))
	e := protocol.Error{Type: protocol.EventError, Code: code, Message: msg}
	if req != nil {
		e.Request = &protocol.ReqInfo{Type: req.Type, ID: req.ID, Room: req.Room}
	}
	h.send(c, e)
}

// now returns the server time in Unix milliseconds.
func now() int64 { return time.Now().UnixMilli() }
