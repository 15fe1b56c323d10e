package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// Direct messages to a nick, on this node or another.

// direct is a DM on its way to the recipient's node.
type direct struct {
	To   engine.ClientID `json:"to"`
	Key  string          `json:"key"` // the recipient's nick key (nickKey) when sent
	From string          `json:"from"`
	Text string          `json:"text"`
	TS   int64           `json:"ts"`
}

func (h *Hub) dm(c *client, req *protocol.Request) {
	if !h.text(c, req) {
		return
	}
	switch {
	case req.User != "" && req.To != "":
		h.fail(c, req, protocol.CodeBadRequest, "a dm goes to a nick (to) or a user (user), not both")
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
		b, err := marshal(protocol.DM{Type: protocol.EventDM, From: c.nick, To: toNick, Text: req.Text, TS: now()})
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
func (h *Hub) remoteDM(c *client, req *protocol.Request, key string) {
	node, to, toNick, err := h.locate(key, req.To)
	if err == nil && (h.node == "" || node == h.node) {
		err = ErrNickNotFound // a record left by a client of this node that has gone
	}
	if err != nil {
		if errors.Is(err, ErrNickNotFound) {
			h.fail(c, req, protocol.CodeUnknownNick, fmt.Sprintf("nobody is called %q", req.To))
		} else {
			h.log.Warn("looking a nick up", "nick", req.To, "err", err)
			h.fail(c, req, protocol.CodeUnavailable, "direct messages cannot be sent right now: "+err.Error())
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
			h.send(c, protocol.DM{Type: protocol.EventDM, From: d.From, To: toNick, Text: d.Text, TS: d.TS})
			h.stats.dms.Add(1)
		case errors.Is(err, ErrNickNotFound), errors.Is(err, ErrNoNode): // a guest nick naming no live node
			h.fail(c, &asked, protocol.CodeUnknownNick, fmt.Sprintf("nobody is called %q", asked.To))
		default:
			h.fail(c, &asked, protocol.CodeNotDelivered, "the message could not be delivered: "+err.Error())
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
	h.send(c, protocol.DM{Type: protocol.EventDM, From: d.From, To: nick, Text: d.Text, TS: d.TS})
	return nil
}

// typingDM tells the client called req.To, on this node, that c is typing
// a DM to it (typing notices stay on their node, as in rooms). A nick
// nobody here holds is answered as a DM to it would be.
func (h *Hub) typingDM(c *client, req *protocol.Request) {
	if req.Room != "" {
		h.fail(c, req, protocol.CodeBadRequest, "typing goes to a room or to a nick (to), not both")
		return
	}
	key, err := nickKey(req.To)
	h.nickMu.Lock()
	to, ok := h.nicks[key]
	h.nickMu.Unlock()
	if err != nil || !ok || to == c.id {
		h.fail(c, req, protocol.CodeUnknownNick, fmt.Sprintf("nobody here is called %q", req.To))
		return
	}
	now := time.Now().UnixNano()
	if now-c.lastTyping < int64(time.Second) {
		return // at most one typing notice per second
	}
	c.lastTyping = now
	b, _ := json.Marshal(protocol.Typing{Type: protocol.EventTyping, Nick: c.nick})
	_ = h.ep.Send(to, engine.Text, b)
}
