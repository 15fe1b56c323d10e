package chat

import (
	"container/heap"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/auth"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// Identity and access. A client connects as a guest or, with a token
// (auth.Verifier), as a user: the token's "sub" is who it is on every
// connection and node, its "nick" the name shown, its "rooms" and "say"
// claims the private and read-only rooms it may use. Bans, mutes and
// invitations are Rules the broker shares with every node.

// GuestPolicy says whether clients without a token are admitted.
type GuestPolicy int

// Guest policies.
const (
	// GuestsAuto admits guests when no Verifier is configured, and only
	// then.
	GuestsAuto GuestPolicy = iota
	// GuestsAllowed admits guests beside users.
	GuestsAllowed
	// GuestsRefused admits users only.
	GuestsRefused
)

// Handshake refusal reasons, as counted in Stats.Refused.
const (
	RefusedTokenMissing  = "token_missing"
	RefusedTokenInvalid  = "token_invalid"
	RefusedTokenExpired  = "token_expired"
	RefusedTokenNotYet   = "token_not_yet_valid"
	RefusedTokenAudience = "token_audience"
	RefusedForbiddenRoom = "forbidden_room"
	RefusedBanned        = "banned"
	RefusedBadRequest    = "bad_request"
)

var refusedReasons = []string{RefusedTokenMissing, RefusedTokenInvalid, RefusedTokenExpired, RefusedTokenNotYet,
	RefusedTokenAudience, RefusedForbiddenRoom, RefusedBanned, RefusedBadRequest}

// Rule kinds.
const (
	RuleBanUser = "ban_user" // Subject: a user id; refused at the handshake, connections closed with 4003
	RuleBanAddr = "ban_addr" // Subject: an address or CIDR prefix; the same
	RuleMute    = "mute"     // Subject: a user id, Room: where it may not say
	RuleInvite  = "invite"   // Subject: a user id, Room: a private room it may join
)

// Rule is an access rule the cluster shares: a ban, a mute or an
// invitation, in force until Until.
type Rule struct {
	Kind    string `json:"kind"`
	Subject string `json:"subject"`
	Room    string `json:"room,omitempty"`
	Until   int64  `json:"until"` // Unix ms
	Reason  string `json:"reason,omitempty"`
}

// Key identifies the rule: a later rule with the same key replaces it.
func (r *Rule) Key() string { return r.Kind + "\x00" + r.Room + "\x00" + r.Subject }

// MaxReasonLength caps a rule's or a disconnection's reason, in bytes (a
// close frame's reason has 123).
const MaxReasonLength = 120

// Check reports what is wrong with r.
func (r *Rule) Check() error {
	switch r.Kind {
	case RuleBanUser, RuleMute, RuleInvite:
		if err := validUser(r.Subject); err != nil {
			return fmt.Errorf("subject: %w", err)
		}
	case RuleBanAddr:
		if _, err := parseAddrRule(r.Subject); err != nil {
			return fmt.Errorf("subject: %w", err)
		}
	default:
		return fmt.Errorf("unknown kind %q", r.Kind)
	}
	needRoom := r.Kind == RuleMute || r.Kind == RuleInvite
	switch {
	case needRoom && validRoom(r.Room) != nil:
		return fmt.Errorf("room %q: %w", r.Room, validRoom(r.Room))
	case !needRoom && r.Room != "":
		return fmt.Errorf("a %s has no room", r.Kind)
	case r.Until <= 0:
		return errors.New("until must be a positive Unix time in milliseconds")
	case len(r.Reason) > MaxReasonLength || strings.ContainsFunc(r.Reason, badTextRune):
		return fmt.Errorf("reason: at most %d bytes of text", MaxReasonLength)
	}
	return nil
}

// parseAddrRule reads an address ban's subject: an IP address or a CIDR
// prefix, made canonical.
func parseAddrRule(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p != p.Masked() {
			return netip.Prefix{}, fmt.Errorf("%q has bits set past its prefix length", s)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// validUser checks a user id: what auth accepts as "sub".
func validUser(s string) error {
	switch {
	case s == "":
		return errors.New("empty user id")
	case len(s) > auth.MaxUserLength:
		return fmt.Errorf("user id longer than %d bytes", auth.MaxUserLength)
	case strings.ContainsFunc(s, badTextRune) || strings.ContainsAny(s, "\t\n"):
		return errors.New("user id with a control character")
	}
	return nil
}

// session is what the handshake hands to OnOpen.
type session struct {
	id   *auth.Identity // nil: a guest
	room string         // the room to join on connect
	nick string         // a guest's nick asked for with ?nick=, "" for none
}

// Privileged implements engine.Privileged: a signed-in user may use the
// connections kept for users (engine.Config.ReservedConnections) and is
// never closed to make room for another client.
func (s *session) Privileged() bool { return s.id != nil }

var _ engine.Privileged = (*session)(nil)

// identity is a signed-in user's, as its latest token gives it.
type identity struct {
	user       string
	rooms, say []string // private rooms it may join, read-only rooms it may say in
	moderate   []string // rooms where it may delete anyone's messages
	expires    int64    // Unix ns
}

func identityOf(id *auth.Identity) *identity {
	return &identity{user: id.User, rooms: id.Rooms, say: id.Say, moderate: id.Moderate, expires: unixNano(id.Expires)}
}

// unixNano is t in Unix ns, saturated: a token's exp past 2262 (9999999999
// is a common "never") is the latest time there is, not a negative number
// that would expire its user at once.
func unixNano(t time.Time) int64 {
	if t.After(time.Unix(0, math.MaxInt64)) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

// unixMilli is t in Unix ms, saturated like unixNano.
func unixMilli(t time.Time) int64 {
	if t.After(time.UnixMilli(math.MaxInt64)) {
		return math.MaxInt64
	}
	return t.UnixMilli()
}

// httpError refuses a handshake, counting its reason.
func (h *Hub) refuse(reason string, status int, body string, hdr http.Header) error {
	h.stats.countRefused(reason)
	return &engine.HTTPError{Status: status, Body: body + "\n", Header: hdr}
}

// OnHandshake implements engine.Application: the engine has checked the
// origin. The client's address and user must not be banned; a token, if
// any, must be valid (and is required unless guests are admitted); a
// room asked for with ?room= must be one the client may join.
func (h *Hub) OnHandshake(r *http.Request) (any, error) {
	s, err := h.handshake(r, h.refuse)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// CheckHandler answers whether a WebSocket handshake with the same
// request (its access_token, Authorization, room and nick) would be
// accepted: 200 "ok", or the status and one-line reason the handshake
// would be refused with. A browser cannot read a refused WebSocket
// handshake's answer: the page asks here after a connection failed
// before it opened, to say why (a sign-in screen, a ban) instead of
// retrying in vain. Nothing is counted.
func (h *Hub) CheckHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, body := http.StatusOK, "ok\n"
		if _, err := h.handshake(r, checkRefusal); err != nil {
			var he *engine.HTTPError
			if errors.As(err, &he) {
				status, body = he.Status, he.Body
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	})
}

// checkRefusal is refuse without counting: CheckHandler's.
func checkRefusal(_ string, status int, body string, hdr http.Header) error {
	return &engine.HTTPError{Status: status, Body: body + "\n", Header: hdr}
}

// handshake is OnHandshake's checks; a refusal is made by refuse.
func (h *Hub) handshake(r *http.Request, refuse func(reason string, status int, body string, hdr http.Header) error) (*session, error) {
	if b, ok := h.addrBanned(r.RemoteAddr); ok {
		return nil, refuse(RefusedBanned, http.StatusForbidden, banText(b), nil)
	}
	q := r.URL.Query()
	s := &session{room: h.cfg.DefaultRoom}
	if rooms := q["room"]; len(rooms) > 1 {
		return nil, refuse(RefusedBadRequest, http.StatusBadRequest, "400 room given more than once", nil)
	} else if len(rooms) == 1 {
		if err := validRoom(rooms[0]); err != nil {
			return nil, refuse(RefusedBadRequest, http.StatusBadRequest, "400 room name "+err.Error(), nil)
		}
		s.room = rooms[0]
	}
	if nicks := q["nick"]; len(nicks) > 1 {
		return nil, refuse(RefusedBadRequest, http.StatusBadRequest, "400 nick given more than once", nil)
	} else if len(nicks) == 1 {
		if _, err := normalizeNick(nicks[0]); err != nil {
			return nil, refuse(RefusedBadRequest, http.StatusBadRequest, "400 nick "+err.Error(), nil)
		}
		s.nick = nicks[0]
	}
	token, err := bearer(r, q)
	if err != nil {
		return nil, refuse(RefusedBadRequest, http.StatusBadRequest, "400 "+err.Error(), nil)
	}
	switch {
	case token != "" && h.cfg.Verifier == nil:
		return nil, refuse(RefusedTokenInvalid, http.StatusUnauthorized, "401 token invalid: this server has no key to check tokens with",
			http.Header{"WWW-Authenticate": {`Bearer error="invalid_token"`}})
	case token != "":
		id, err := h.cfg.Verifier.Verify(token)
		if err == nil {
			err = h.checkIdentity(&id)
		}
		if err != nil {
			reason := map[string]string{"missing": RefusedTokenMissing, "expired": RefusedTokenExpired,
				"not_yet_valid": RefusedTokenNotYet, "audience": RefusedTokenAudience}[auth.Reason(err)]
			if reason == "" {
				reason = RefusedTokenInvalid
			}
			return nil, refuse(reason, http.StatusUnauthorized, "401 "+err.Error(),
				http.Header{"WWW-Authenticate": {`Bearer error="invalid_token"`}})
		}
		s.id = &id
	case !h.guestsAllowed():
		return nil, refuse(RefusedTokenMissing, http.StatusUnauthorized, "401 token missing: sign in (access_token=...)",
			http.Header{"WWW-Authenticate": {"Bearer"}})
	}
	if s.id != nil {
		if b, ok := h.rule(RuleBanUser, "", s.id.User); ok {
			return nil, refuse(RefusedBanned, http.StatusForbidden, banText(b), nil)
		}
	}
	if err := h.mayJoin(s.id, s.room); err != nil {
		return nil, refuse(RefusedForbiddenRoom, http.StatusForbidden, "403 "+err.Error(), nil)
	}
	return s, nil
}

// bearer returns the token of r: the access_token query parameter
// (browsers cannot set headers on a WebSocket) or an Authorization: Bearer
// header, not both.
func bearer(r *http.Request, q map[string][]string) (string, error) {
	qs := q["access_token"]
	hdr := r.Header.Values("Authorization")
	switch {
	case len(qs) > 1 || len(hdr) > 1:
		return "", errors.New("token given more than once")
	case len(qs) == 1 && len(hdr) == 1:
		return "", errors.New("token given both as access_token and in Authorization")
	case len(hdr) == 1:
		t, ok := strings.CutPrefix(hdr[0], "Bearer ")
		if !ok {
			return "", errors.New("the Authorization header must be Bearer <token>")
		}
		return strings.TrimSpace(t), nil
	case len(qs) == 1:
		if qs[0] == "" {
			return "", errors.New("empty access_token")
		}
		return qs[0], nil
	}
	return "", nil
}

// checkIdentity checks what the chat makes of a verified token's claims:
// its nick.
func (h *Hub) checkIdentity(id *auth.Identity) error {
	nick := id.Nick
	if nick == "" {
		nick = id.User
	}
	shown, err := normalizeNick(nick)
	if err != nil {
		return fmt.Errorf("%w: nick %q %v", auth.ErrInvalid, nick, err)
	}
	if k := keyOf(shown); isGuest(k) || k == systemKey {
		return fmt.Errorf("%w: nick %q: guest- nicks and system are the server's", auth.ErrInvalid, shown)
	}
	id.Nick = shown
	return nil
}

func (h *Hub) guestsAllowed() bool {
	switch h.cfg.Guests {
	case GuestsAllowed:
		return true
	case GuestsRefused:
		return false
	}
	return h.cfg.Verifier == nil
}

func banText(b Rule) string {
	s := "403 banned until " + time.UnixMilli(b.Until).UTC().Format(time.RFC3339)
	if b.Reason != "" {
		s += ": " + b.Reason
	}
	return s
}

// private and readOnly say whether a room is one of the configured kinds.
func (h *Hub) private(room string) bool  { return auth.Matches(h.cfg.PrivateRooms, room) }
func (h *Hub) readOnly(room string) bool { return auth.Matches(h.cfg.ReadOnlyRooms, room) }

// mayJoin reports why the client with identity id (nil: a guest) may not
// join room, or nil.
func (h *Hub) mayJoin(id *auth.Identity, room string) error {
	if !h.private(room) {
		return nil
	}
	if id != nil {
		if auth.Matches(id.Rooms, room) {
			return nil
		}
		if _, ok := h.rule(RuleInvite, room, id.User); ok {
			return nil
		}
	}
	return fmt.Errorf("room %q is private: it needs a rooms claim or an invitation", room)
}

// mayJoinNow is mayJoin for a connected client.
func (h *Hub) mayJoinNow(c *client, room string) error {
	if !h.private(room) {
		return nil
	}
	if c.userID() != "" {
		if auth.Matches(c.who.rooms, room) {
			return nil
		}
		if _, ok := h.rule(RuleInvite, room, c.userID()); ok {
			return nil
		}
	}
	return fmt.Errorf("room %q is private: it needs a rooms claim or an invitation", room)
}

// maySay reports the error code and text refusing c's say in room, or "".
func (h *Hub) maySay(c *client, room string) (protocol.Code, string) {
	if h.readOnly(room) && (c.who == nil || !auth.Matches(c.who.say, room)) {
		return protocol.CodeReadOnly, fmt.Sprintf("room %q is read-only: only users with a say claim for it may speak", room)
	}
	if c.userID() != "" {
		if m, ok := h.rule(RuleMute, room, c.userID()); ok {
			return protocol.CodeMuted, fmt.Sprintf("you are muted in %q until %s", room, time.UnixMilli(m.Until).UTC().Format(time.RFC3339))
		}
	}
	return "", ""
}

// rules are the access rules in force, as the broker delivered them.
type rules struct {
	mu    sync.RWMutex
	m     map[string]Rule
	addrs int // address bans among them
}

// rule returns the rule of kind for subject (and room) if one is in force.
func (h *Hub) rule(kind, room, subject string) (Rule, bool) {
	r := Rule{Kind: kind, Room: room, Subject: subject}
	h.rules.mu.RLock()
	got, ok := h.rules.m[r.Key()]
	h.rules.mu.RUnlock()
	return got, ok && got.Until > time.Now().UnixMilli()
}

// bannedClient reports whether c's user or address is banned now.
func (h *Hub) bannedClient(c *client) bool {
	if u := c.userID(); u != "" {
		if _, ok := h.rule(RuleBanUser, "", u); ok {
			return true
		}
	}
	h.rules.mu.RLock()
	addrs := h.rules.addrs
	h.rules.mu.RUnlock()
	if addrs == 0 {
		return false
	}
	info, err := h.ep.Info(c.id)
	if err != nil {
		return false
	}
	_, ok := h.addrBanned(info.RemoteAddr)
	return ok
}

// addrBanned returns the ban of remote's address ("ip:port"), if any.
func (h *Hub) addrBanned(remote string) (Rule, bool) {
	h.rules.mu.RLock()
	defer h.rules.mu.RUnlock()
	if h.rules.addrs == 0 {
		return Rule{}, false
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return Rule{}, false
	}
	a, now := ap.Addr().Unmap(), time.Now().UnixMilli()
	for _, r := range h.rules.m {
		if r.Kind != RuleBanAddr || r.Until <= now {
			continue
		}
		if p, err := parseAddrRule(r.Subject); err == nil && p.Contains(a) {
			return r, true
		}
	}
	return Rule{}, false
}

// HandleRule implements BrokerHandler: a rule takes effect here (or ends,
// when deleted). A ban closes the matching clients with protocol.CloseBanned.
func (h *Hub) HandleRule(r Rule, deleted bool) {
	if !deleted {
		if err := r.Check(); err != nil {
			h.dropped("rule", err)
			return
		}
	}
	k := r.Key()
	h.rules.mu.Lock()
	old, had := h.rules.m[k]
	switch {
	case deleted:
		delete(h.rules.m, k)
	case !had && len(h.rules.m) >= h.cfg.MaxRules:
		h.rules.mu.Unlock()
		h.dropped("rule", fmt.Errorf("%d rules held already (MaxRules)", h.cfg.MaxRules))
		return
	default:
		h.rules.m[k] = r
	}
	if had && old.Kind == RuleBanAddr {
		h.rules.addrs--
	}
	if !deleted && r.Kind == RuleBanAddr {
		h.rules.addrs++
	}
	h.rules.mu.Unlock()
	if deleted || r.Until <= time.Now().UnixMilli() {
		return
	}
	switch r.Kind {
	case RuleBanUser:
		for _, id := range h.userClients(r.Subject) {
			_ = h.ep.Close(id, engine.StatusCode(protocol.CloseBanned), protocol.ReasonBanned)
		}
	case RuleBanAddr:
		p, _ := parseAddrRule(r.Subject)
		for _, id := range h.ep.Clients() {
			info, err := h.ep.Info(id)
			if err != nil {
				continue
			}
			if ap, err := netip.ParseAddrPort(info.RemoteAddr); err == nil && p.Contains(ap.Addr().Unmap()) {
				_ = h.ep.Close(id, engine.StatusCode(protocol.CloseBanned), protocol.ReasonBanned)
			}
		}
	}
}

// sweepRules drops rules past their time.
func (h *Hub) sweepRules(now time.Time) {
	ms := now.UnixMilli()
	h.rules.mu.Lock()
	for k, r := range h.rules.m {
		if r.Until <= ms {
			delete(h.rules.m, k)
			if r.Kind == RuleBanAddr {
				h.rules.addrs--
			}
		}
	}
	h.rules.mu.Unlock()
}

// users indexes connected users' clients by user id.
type users struct {
	mu     sync.Mutex
	m      map[string][]engine.ClientID
	byNick map[string]string // nick key -> user id, of the users here (their mentions: notify.go)
}

func (h *Hub) addUser(user, nick string, id engine.ClientID) {
	h.users.mu.Lock()
	h.users.m[user] = append(h.users.m[user], id)
	if h.users.byNick == nil {
		h.users.byNick = make(map[string]string)
	}
	h.users.byNick[keyOf(nick)] = user
	h.users.mu.Unlock()
}

// userByNick returns the user here whose nick has key, or "".
func (h *Hub) userByNick(key string) string {
	h.users.mu.Lock()
	defer h.users.mu.Unlock()
	return h.users.byNick[key]
}

func (h *Hub) removeUser(user string, id engine.ClientID) {
	h.users.mu.Lock()
	ids := h.users.m[user]
	for i, x := range ids {
		if x == id {
			ids[i] = ids[len(ids)-1]
			ids = ids[:len(ids)-1]
			break
		}
	}
	if len(ids) == 0 {
		delete(h.users.m, user)
		for k, u := range h.users.byNick {
			if u == user {
				delete(h.users.byNick, k)
			}
		}
	} else {
		h.users.m[user] = ids
	}
	h.users.mu.Unlock()
}

// userClients returns a copy of user's clients here.
func (h *Hub) userClients(user string) []engine.ClientID {
	h.users.mu.Lock()
	defer h.users.mu.Unlock()
	return append([]engine.ClientID(nil), h.users.m[user]...)
}

// expiry is a heap of users' token expiries; each user client has one
// entry, moved on when a refresh pushed its token's expiry on.
type expiry []expiryEntry

type expiryEntry struct {
	at int64 // Unix ns
	id engine.ClientID
}

func (e expiry) Len() int           { return len(e) }
func (e expiry) Less(i, j int) bool { return e[i].at < e[j].at }
func (e expiry) Swap(i, j int)      { e[i], e[j] = e[j], e[i] }
func (e *expiry) Push(x any)        { *e = append(*e, x.(expiryEntry)) }
func (e *expiry) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

func (h *Hub) watchExpiry(id engine.ClientID, at int64) {
	h.expMu.Lock()
	heap.Push(&h.expiries, expiryEntry{at: at, id: id})
	h.expMu.Unlock()
}

// expire closes the clients whose token has expired with
// protocol.CloseTokenExpired.
func (h *Hub) expire(now time.Time) {
	t := now.UnixNano()
	for {
		h.expMu.Lock()
		if len(h.expiries) == 0 || h.expiries[0].at > t {
			h.expMu.Unlock()
			return
		}
		e := heap.Pop(&h.expiries).(expiryEntry)
		h.expMu.Unlock()
		c := h.client(e.id)
		if c == nil {
			continue
		}
		h.nickMu.Lock() // a refresh replaces c.who under nickMu
		at := c.who.expires
		h.nickMu.Unlock()
		if at > t {
			h.watchExpiry(e.id, at) // refreshed meanwhile
			continue
		}
		_ = h.ep.Close(e.id, engine.StatusCode(protocol.CloseTokenExpired), protocol.ReasonTokenExpired)
	}
}

// refresh applies a token sent in band: the same user, a later expiry.
func (h *Hub) refresh(c *client, req *protocol.Request) {
	if c.userID() == "" {
		h.fail(c, req, protocol.CodeForbidden, "guests cannot sign in on an open connection: reconnect with access_token")
		return
	}
	if h.cfg.Verifier == nil {
		h.fail(c, req, protocol.CodeForbidden, "this server checks no tokens")
		return
	}
	id, err := h.cfg.Verifier.Verify(req.Token)
	if err != nil {
		h.fail(c, req, protocol.CodeBadToken, err.Error())
		return
	}
	if id.User != c.userID() {
		h.fail(c, req, protocol.CodeBadToken, "the token names another user")
		return
	}
	h.nickMu.Lock()
	c.who = identityOf(&id)
	h.nickMu.Unlock()
	h.send(c, protocol.Authed{Type: protocol.EventAuth, User: c.userID(), Expires: unixMilli(id.Expires)})
}

// control is a message every node receives (Broker.Broadcast): a DM to a
// user, or a disconnection.
type control struct {
	Kind   string            `json:"kind"` // "dm" or "disconnect"
	User   string            `json:"user"` // the recipient, or who is disconnected
	From   string            `json:"from,omitempty"`
	FromID string            `json:"from_user,omitempty"` // the sender's user id ("" for a guest or the system)
	Text   string            `json:"text,omitempty"`
	TS     int64             `json:"ts,omitempty"`
	Code   engine.StatusCode `json:"code,omitempty"`
	Reason string            `json:"reason,omitempty"`
	Room   string            `json:"room,omitempty"`  // a read mark's
	Seq    int64             `json:"seq,omitempty"`   // a read mark's
	Epoch  int64             `json:"epoch,omitempty"` // a read mark's
}

// HandleControl implements BrokerHandler.
func (h *Hub) HandleControl(data []byte) {
	var m control
	err := decodeStrict(data, &m)
	if err == nil {
		err = validUser(m.User)
	}
	if err != nil {
		h.dropped("control", err)
		return
	}
	switch m.Kind {
	case "dm":
		if err := h.checkBusText(m.Text); err != nil || !isNick(m.From) || m.TS <= 0 || m.FromID != "" && validUser(m.FromID) != nil {
			h.dropped("control", fmt.Errorf("a dm with a bad text, sender or time: %v", err))
			return
		}
		ids := h.userClients(m.User)
		if m.FromID != "" && m.FromID != m.User {
			ids = append(ids, h.userClients(m.FromID)...)
		}
		if len(ids) == 0 {
			return
		}
		b, err := marshal(protocol.DM{Type: protocol.EventDM, From: m.From, FromUser: m.FromID, To: m.User, ToUser: m.User, Text: m.Text, TS: m.TS})
		if err != nil {
			return
		}
		_, _ = h.ep.Multicast(ids, engine.Text, b)
	case "read":
		h.pushRead(&m)
	case "read_dms":
		if m.TS > 0 {
			h.readNotes(m.User, func(n *Notification) bool { return n.Kind == "dm" && n.TS <= m.TS })
		}
	case "disconnect":
		if m.Code < 4000 || m.Code > 4999 || len(m.Reason) > MaxReasonLength {
			h.dropped("control", fmt.Errorf("a disconnection with code %d", m.Code))
			return
		}
		for _, id := range h.userClients(m.User) {
			_ = h.ep.Close(id, m.Code, m.Reason)
		}
	default:
		h.dropped("control", fmt.Errorf("unknown kind %q", m.Kind))
	}
}

// dropped counts and logs (at most once a second) a message from the
// broker that was refused.
func (h *Hub) dropped(kind string, err error) {
	h.stats.countDropped(kind)
	if h.brokerLog.allow(time.Now()) {
		h.log.Warn("dropping a message from the broker", "kind", kind, "err", err)
	}
}

// checkBusText checks a text that came from the broker as a client's
// would be.
func (h *Hub) checkBusText(s string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return errors.New("empty text")
	case len(s) > h.cfg.MaxTextLength:
		return fmt.Errorf("text longer than %d bytes", h.cfg.MaxTextLength)
	case strings.ContainsFunc(s, badTextRune):
		return errors.New("text with control or bidi characters")
	}
	return nil
}
