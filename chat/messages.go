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
)

// Saying: a client's message to a room, and the checks a room message
// from the broker passes before any client sees it.

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
	h.broker.Publish(r.name, b, h.dedupeID(c, req.ID), func(err error) {
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
	} else if info, err := h.ep.Info(c.id); err == nil {
		if k, ok := netkey.Of(info.RemoteAddr); ok {
			who = "g\x00" + k.String()
		}
	}
	sum := sha256.Sum256([]byte(who))
	return base64.RawURLEncoding.EncodeToString(sum[:12]) + "." + id
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
