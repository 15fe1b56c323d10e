package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// What a backend can do to the chat (the server API, api package, calls
// these). Each acts on the whole cluster through the broker.

// Errors of the backend methods, for callers to map onto statuses.
var (
	// ErrInvalid wraps an argument that is not valid.
	ErrInvalid = errors.New("chat: invalid argument")
	// ErrNoRoom is returned for a room that does not exist on any node
	// this one can see.
	ErrNoRoom = errors.New("chat: no such room")
	// ErrRuleLimit is returned for a new rule while the hub holds
	// MaxRules: it would not be in force.
	ErrRuleLimit = errors.New("chat: too many rules")
	// ErrNoMessage is returned for a message the room's history does not
	// hold (or holds deleted).
	ErrNoMessage = errors.New("chat: no such message")
)

// Sender is who a backend's message comes from: a user (ID and Nick), or
// the system when ID is "".
type Sender struct {
	ID   string
	Nick string
}

// sender checks s and returns the nick and user id to publish with.
func (h *Hub) sender(s Sender) (nick, user string, err error) {
	if s.ID == "" {
		if s.Nick != "" {
			return "", "", fmt.Errorf("%w: a nick needs a user id", ErrInvalid)
		}
		return systemNick, "", nil
	}
	if err := validUser(s.ID); err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	nick = s.Nick
	if nick == "" {
		nick = s.ID
	}
	shown, err := normalizeNick(nick)
	if err != nil {
		return "", "", fmt.Errorf("%w: nick %q %v", ErrInvalid, nick, err)
	}
	if k := keyOf(shown); isGuest(k) || k == systemKey {
		return "", "", fmt.Errorf("%w: guest- nicks and system are the server's", ErrInvalid)
	}
	return shown, s.ID, nil
}

// Publish says text in room as from, past read-only rules and mutes (the
// backend decides), and returns the message's sequence number once the
// broker has it. The room is opened here if no client of this node is in
// it, and kept for HistoryTTL like any empty room.
func (h *Hub) Publish(ctx context.Context, room, text string, from Sender) error {
	if err := validRoom(room); err != nil {
		return fmt.Errorf("%w: room %q %v", ErrInvalid, room, err)
	}
	if err := h.checkBusText(text); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	nick, user, err := h.sender(from)
	if err != nil {
		return err
	}
	r, err := h.roomFor(ctx, room, nil)
	if err != nil {
		return fmt.Errorf("chat: open room %q: %w", room, err)
	}
	r.mu.Unlock()
	return h.publishWait(ctx, room, published{From: nick, User: user, System: user == "", Text: text, TS: now()})
}

// publishWait publishes the backend's entry p in room's log and waits
// for the broker to have it, or for ctx to end (the entry may then still
// be stored).
func (h *Hub) publishWait(ctx context.Context, room string, p published) error {
	b, err := marshal(p)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	h.broker.Publish(room, b, "", func(err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			h.stats.publishFailed.Add(1)
			return fmt.Errorf("chat: publish to %q: %w", room, err)
		}
	case <-ctx.Done():
		return fmt.Errorf("chat: publish to %q: %w", room, ctx.Err())
	}
	h.stats.published.Add(1)
	return nil
}

// DeleteMessage deletes message seq of room as a moderator would: its
// members get a deleted event (mod set, from "system"), and the history
// holds it without its text. The room's history must hold it: an older
// one is ErrNoMessage.
func (h *Hub) DeleteMessage(ctx context.Context, room string, seq int64) error {
	if err := validRoom(room); err != nil {
		return fmt.Errorf("%w: room %q %v", ErrInvalid, room, err)
	}
	if seq <= 0 {
		return fmt.Errorf("%w: message %d", ErrInvalid, seq)
	}
	r, err := h.roomFor(ctx, room, nil)
	if err != nil {
		return fmt.Errorf("chat: open room %q: %w", room, err)
	}
	_, _, found := r.message(seq)
	r.mu.Unlock()
	if !found {
		return fmt.Errorf("%w: room %q holds no message %d (deleted, not a message, or older than its history)", ErrNoMessage, room, seq)
	}
	return h.publishWait(ctx, room, published{Deletes: seq, From: systemNick, System: true, Mod: true, TS: now()})
}

// SendDM sends text to every connection of user, on every node, as from.
// It does not wait for the nodes (a DM to a user connected nowhere is not
// kept); ctx ended before it is sent, it is not.
func (h *Hub) SendDM(ctx context.Context, user, text string, from Sender) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validUser(user); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := h.checkBusText(text); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	nick, fromID, err := h.sender(from)
	if err != nil {
		return err
	}
	return h.broadcast(control{Kind: "dm", User: user, From: nick, FromID: fromID, Text: text, TS: now()})
}

// dmUser sends a client's DM to every connection of a user.
func (h *Hub) dmUser(c *client, req *protocol.Request) {
	if err := validUser(req.User); err != nil {
		h.fail(c, req, protocol.CodeBadRequest, "user: "+err.Error())
		return
	}
	ts := now()
	// Its notification waits before the DM goes: a reader as quick as the
	// broadcast marks it read before it would otherwise wait.
	note := h.noteDM(req.User, c, req.Text, ts)
	err := h.broadcast(control{Kind: "dm", User: req.User, From: c.nick, FromID: c.userID(), Text: req.Text, TS: ts})
	if err != nil {
		h.unnote(req.User, note)
		h.fail(c, req, protocol.CodeNotDelivered, "the message could not be delivered: "+err.Error())
		return
	}
	h.stats.dms.Add(1)
	if c.userID() == "" {
		// A guest's copy (a signed-in sender's came with the broadcast,
		// to all its connections).
		h.send(c, protocol.DM{Type: protocol.EventDM, From: c.nick, To: req.User, ToUser: req.User, Text: req.Text, TS: now()})
	}
}

func (h *Hub) broadcast(m control) error {
	b, err := marshal(m)
	if err != nil {
		return err
	}
	if err := h.broker.Broadcast(b); err != nil {
		return fmt.Errorf("chat: broadcast: %w", err)
	}
	return nil
}

// Disconnect closes every connection of user, on every node, with code
// (4000-4999) and reason.
func (h *Hub) Disconnect(user string, code engine.StatusCode, reason string) error {
	if err := validUser(user); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if code < 4000 || code > 4999 {
		return fmt.Errorf("%w: code %d: want 4000-4999", ErrInvalid, code)
	}
	if len(reason) > MaxReasonLength || !printableText(reason) {
		return fmt.Errorf("%w: reason: at most %d bytes of text", ErrInvalid, MaxReasonLength)
	}
	return h.broadcast(control{Kind: "disconnect", User: user, Code: code, Reason: reason})
}

func printableText(s string) bool {
	for _, r := range s {
		if badTextRune(r) || r == '\n' || r == '\t' {
			return false
		}
	}
	return true
}

// PutRule puts r (a ban, mute or invitation) in force on every node.
func (h *Hub) PutRule(ctx context.Context, r Rule) error {
	if err := r.Check(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if r.Kind == RuleBanAddr {
		p, _ := parseAddrRule(r.Subject)
		r.Subject = p.String()
	}
	if !h.ruleFits(r.Key()) {
		return fmt.Errorf("%w: %d rules held already (MaxRules); end one, or raise --max-rules", ErrRuleLimit, h.cfg.MaxRules)
	}
	if err := h.broker.PutRule(ctx, r); err != nil {
		return fmt.Errorf("chat: put rule: %w", err)
	}
	return nil
}

// ruleFits tells whether a rule of key k would be held: it is held
// already, or the hub holds fewer than MaxRules once those past their
// time are dropped. In a cluster every node holds the same rules, so a
// node's answer is the cluster's but for rules put at the same moment
// elsewhere (those past the cap are dropped and counted, as before).
func (h *Hub) ruleFits(k string) bool {
	h.rules.mu.RLock()
	_, had := h.rules.m[k]
	full := len(h.rules.m) >= h.cfg.MaxRules
	h.rules.mu.RUnlock()
	if had || !full {
		return true
	}
	h.sweepRules(time.Now())
	h.rules.mu.RLock()
	defer h.rules.mu.RUnlock()
	return len(h.rules.m) < h.cfg.MaxRules
}

// DeleteRule ends the rule of r's kind, room and subject on every node.
func (h *Hub) DeleteRule(ctx context.Context, r Rule) error {
	r.Until = 1 // checked as any rule, but for its time
	if err := r.Check(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if r.Kind == RuleBanAddr {
		p, _ := parseAddrRule(r.Subject)
		r.Subject = p.String()
	}
	if err := h.broker.DeleteRule(ctx, r); err != nil {
		return fmt.Errorf("chat: delete rule: %w", err)
	}
	return nil
}

// Rules returns the rules in force, of kind ("" all).
func (h *Hub) Rules(kind string) []Rule {
	now := time.Now().UnixMilli()
	h.rules.mu.RLock()
	defer h.rules.mu.RUnlock()
	out := []Rule{}
	for _, r := range h.rules.m {
		if r.Until > now && (kind == "" || r.Kind == kind) {
			out = append(out, r)
		}
	}
	return out
}

// RoomPresence is a room's members as a backend reads them.
type RoomPresence struct {
	Room      string   `json:"room"`
	Count     int      `json:"count"`
	Members   []string `json:"members"`
	Truncated bool     `json:"truncated,omitempty"`
}

// presenceSettle is how long a node that opens a room for a backend waits
// for the other nodes to tell their members.
const presenceSettle = 300 * time.Millisecond

// Presence returns room's members across the cluster (at most
// PresenceListMax names; the count is exact).
func (h *Hub) Presence(ctx context.Context, room string) (RoomPresence, error) {
	r, err := h.openForBackend(ctx, room)
	if err != nil {
		return RoomPresence{}, err
	}
	defer r.mu.Unlock()
	members, truncated := r.memberSample(h.cfg.PresenceListMax)
	return RoomPresence{Room: room, Count: r.count(), Members: members, Truncated: truncated}, nil
}

// History returns up to limit (at most HistorySize) of room's latest
// messages, oldest first.
func (h *Hub) History(ctx context.Context, room string, limit int) ([]json.RawMessage, error) {
	r, err := h.openForBackend(ctx, room)
	if err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	if limit <= 0 || limit > h.cfg.HistorySize {
		limit = h.cfg.HistorySize
	}
	msgs, _ := r.history(-1, 0, limit)
	return nonNil(msgs), nil
}

// openForBackend returns room, locked, opening it if needed; in a
// cluster a room opened here waits presenceSettle for the others' news.
func (h *Hub) openForBackend(ctx context.Context, room string) (*room, error) {
	if err := validRoom(room); err != nil {
		return nil, fmt.Errorf("%w: room %q %v", ErrInvalid, room, err)
	}
	_, open := h.rooms.Load(room)
	r, err := h.roomFor(ctx, room, nil)
	if err != nil {
		return nil, fmt.Errorf("chat: open room %q: %w", room, err)
	}
	if !open && h.node != "" {
		r.mu.Unlock()
		t := time.NewTimer(presenceSettle) // the other nodes answer the want sent on opening
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, fmt.Errorf("chat: open room %q: %w", room, ctx.Err())
		}
		if r = h.lockRoom(room); r == nil {
			return nil, fmt.Errorf("chat: room %q: %w", room, ErrNoRoom)
		}
	}
	return r, nil
}

// NodeLoad implements BrokerHandler; the broker fills in the node's name.
func (h *Hub) NodeLoad() NodeInfo {
	n := NodeInfo{Clients: h.ep.Count(), Rooms: int(h.roomCount.Load())}
	h.users.mu.Lock()
	n.Users = len(h.users.m)
	h.users.mu.Unlock()
	return n
}

// Nodes returns the cluster's live nodes and their loads, this one first.
func (h *Hub) Nodes() []NodeInfo { return h.presence.Nodes() }
