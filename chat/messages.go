package chat

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/netkey"
	"github.com/parleyhq/parley/protocol"
)

// Saying: a client's message to a room, and the checks a room message
// from the broker passes before any client sees it.

// text checks a message's text.
func (h *Hub) text(c *client, req *protocol.Request) bool {
	switch {
	case strings.TrimSpace(req.Text) == "":
		h.fail(c, req, protocol.CodeEmpty, "the message is empty")
	case len(req.Text) > h.cfg.MaxTextLength:
		h.fail(c, req, protocol.CodeTooLong, fmt.Sprintf("messages are at most %d bytes", h.cfg.MaxTextLength))
	case strings.ContainsFunc(req.Text, badTextRune):
		h.fail(c, req, protocol.CodeBadText, "text may not hold control characters (but tab and newline) or bidi embeddings, overrides or isolates")
	default:
		return true
	}
	return false
}

// speaking returns the room c's say or edit req speaks in, once its text
// and c's right to speak there are checked (c is answered if not).
func (h *Hub) speaking(c *client, req *protocol.Request) (*room, bool) {
	r := c.room(req.Room)
	if r == nil {
		h.fail(c, req, protocol.CodeNotInRoom, fmt.Sprintf("join %q before a %s there", req.Room, req.Type))
		return nil, false
	}
	if !h.text(c, req) {
		return nil, false
	}
	if code, msg := h.maySay(c, r.name); code != "" {
		h.fail(c, req, code, msg)
		return nil, false
	}
	return r, true
}

func (h *Hub) say(c *client, req *protocol.Request) {
	r, ok := h.speaking(c, req)
	if !ok {
		return
	}
	p := published{From: c.nick, User: c.userID(), SID: h.sid(c), Text: req.Text, TS: now(), ID: req.ID}
	if req.Reply != 0 {
		ref, ok := h.replyTo(c, req, r)
		if !ok {
			return
		}
		p.Reply = ref
	}
	h.publishEntry(c, req, r, p)
}

// publishEntry publishes c's entry p (a message, an edit, a delete) for
// req in r's log. The broker numbers it and hands it to every node with
// members in the room, this one included (HandleMessage).
func (h *Hub) publishEntry(c *client, req *protocol.Request, r *room, p published) {
	p.ID = req.ID
	b, err := marshal(p)
	if err != nil {
		h.log.Error("encoding a chat message", "err", err)
		return
	}
	id, info := c.id, *req
	h.broker.Publish(r.name, b, h.dedupeID(c, req.ID), func(err error) {
		if err == nil {
			h.stats.published.Add(1)
			return
		}
		if n := h.stats.publishFailed.Add(1); h.brokerLog.allow(time.Now()) {
			h.log.Warn("room messages not delivered", "room", info.Room, "err", err, "total", n)
		}
		if c := h.client(id); c != nil {
			h.fail(c, &info, protocol.CodeNotDelivered, "the message could not be delivered: "+err.Error())
		}
	})
}

// dedupeID is the id a message said under the request id id is published
// with (the broker drops a room's repeated ids): a resend by the same
// sender is dropped, another sender's message with that id is not. A user
// is its user id, on any connection; a guest is its address (an IPv4
// address, an IPv6 /56: netkey), the one thing of it that a reconnect keeps (its
// nick may change). The sender is hashed: the id stays short and printable
// whatever the user id holds.
func (h *Hub) dedupeID(c *client, id string) string {
	if id == "" {
		return ""
	}
	var who string
	if u := c.userID(); u != "" {
		who = "u\x00" + u
	} else if ap, err := h.ep.Addr(c.id); err == nil {
		if k, ok := netkey.OfAddr(ap); ok {
			who = "g\x00" + k.String()
		}
	}
	sum := sha256.Sum256([]byte(who))
	return base64.RawURLEncoding.EncodeToString(sum[:12]) + "." + id
}

// published is a room log entry as the broker carries it: a Message (or
// an Edit) without the fields each node adds (type, room, seq). Edits and
// Deletes come first: an entry's kind is told by its first bytes
// (kindOf), and the nodes' own entries are encoded in this order.
type published struct {
	Edits   int64              `json:"edits,omitempty"`   // this entry edits that message: Text is its new text
	Deletes int64              `json:"deletes,omitempty"` // this entry deletes that message
	React   int64              `json:"react,omitempty"`   // this entry toggles Emoji on that message (reactions.go)
	Emoji   string             `json:"emoji,omitempty"`
	From    string             `json:"from"`
	User    string             `json:"user,omitempty"`
	SID     string             `json:"sid,omitempty"` // a guest sender's id (Hub.sid)
	System  bool               `json:"system,omitempty"`
	Mod     bool               `json:"mod,omitempty"` // a delete by a moderator
	Text    string             `json:"text"`
	TS      int64              `json:"ts"`
	ID      string             `json:"id,omitempty"`
	Reply   *protocol.ReplyRef `json:"reply,omitempty"`
	// Set by a node on its history's copy of a message, never on the bus.
	Edited  int64 `json:"edited,omitempty"`
	Deleted int64 `json:"deleted,omitempty"`
}

// check refuses what no client of this server could have published: a
// message from the bus is held to the rules its sender was.
func (p *published) check(h *Hub) error {
	if p.React != 0 || p.Emoji != "" {
		switch {
		case p.React <= 0 || !validEmoji(p.Emoji) || p.Text != "" || p.Edits != 0 || p.Deletes != 0 || p.Reply != nil || p.Mod:
			return fmt.Errorf("a reaction to %d with %q", p.React, p.Emoji)
		case p.User == "" && p.SID == "" && !p.System:
			return errors.New("a reaction from nobody")
		}
	} else if p.Deletes != 0 {
		if p.Text != "" {
			return errors.New("a delete with a text")
		}
	} else if err := h.checkBusText(p.Text); err != nil && p.React == 0 {
		return err
	}
	switch {
	case p.Edited != 0 || p.Deleted != 0:
		return errors.New("edited or deleted set on the bus")
	case p.Edits < 0 || p.Deletes < 0 || p.Edits > 0 && p.Deletes > 0:
		return fmt.Errorf("edits %d, deletes %d", p.Edits, p.Deletes)
	case p.Mod && (p.Deletes == 0 || p.User == "" && !p.System):
		return errors.New("mod set on what is not a user's or the system's delete")
	case p.Reply != nil && (p.Edits != 0 || p.Deletes != 0):
		return errors.New("a reply on an edit or delete")
	case p.Reply != nil && checkReply(p.Reply) != nil:
		return fmt.Errorf("reply: %w", checkReply(p.Reply))
	case p.SID != "" && (p.User != "" || p.System || !validSID(p.SID)):
		return fmt.Errorf("bad sid %q", p.SID)
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
//
// The entry decoded is left in p. An edit or delete is encoded again, in
// published's order, so that its first bytes tell its kind (kindOf); a
// message that would look like one ("edits":0 first) is refused.
func (h *Hub) sanitize(room string, msg []byte, p *published) ([]byte, bool) {
	*p = published{}
	err := decodeStrict(msg, p)
	if err == nil {
		err = p.check(h)
	}
	msg = bytes.TrimSpace(msg) // one object: '{' ... '}' once trimmed
	if err == nil {
		switch k := kindOf(msg); {
		case p.Edits != 0 || p.Deletes != 0 || p.React != 0:
			if msg, err = marshal(p); err == nil {
				msg = bytes.TrimSpace(msg)
			}
		case k != kindMessage:
			err = errors.New(`a message starting with "edits", "deletes" or "react"`)
		}
	}
	if err != nil {
		h.dropped("message", fmt.Errorf("room %q: %w", room, err))
		return nil, false
	}
	return msg, true
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
