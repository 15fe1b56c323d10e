package chat

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/parleyhq/parley/auth"
	"github.com/parleyhq/parley/protocol"
)

// Editing, deleting and answering messages. An edit or a delete is an
// entry of the room's log like a message: the broker numbers it, so every
// node of a cluster applies it at the same place, a restart from the log
// (--data-dir) applies it again, and a client resuming from a sequence
// number gets it. Each node applies it to its history's copy of the
// message, which then holds the new text (or none), and keeps the entry
// itself after it.

// entryKind is what a room log entry is.
type entryKind uint8

const (
	kindMessage entryKind = iota
	kindEdit
	kindDelete
	kindReact
)

// The first bytes of an edit's and a delete's published encoding:
// published puts Edits and Deletes first, and sanitize encodes every edit
// and delete from the bus again, so the kind is told without decoding.
var (
	editsPrefix   = []byte(`{"edits":`)
	deletesPrefix = []byte(`{"deletes":`)
	reactPrefix   = []byte(`{"react":`)
)

// kindOf tells a sanitized entry's kind from its first bytes.
func kindOf(msg []byte) entryKind {
	switch {
	case len(msg) < 2 || msg[1] != '"':
		return kindMessage
	case bytes.HasPrefix(msg, editsPrefix):
		return kindEdit
	case bytes.HasPrefix(msg, deletesPrefix):
		return kindDelete
	case bytes.HasPrefix(msg, reactPrefix):
		return kindReact
	}
	return kindMessage
}

// event is the type of the event members receive for an entry.
func (k entryKind) event() string {
	switch k {
	case kindEdit:
		return "edited"
	case kindDelete:
		return "deleted"
	case kindReact:
		return "reaction" // never sent so: reactions are (reactions.go)
	}
	return "message"
}

// sidLen is the length of a guest's sender id: 8 bytes (64 bits: no two
// guests share one) in base64, 11 characters. Every guest message carries
// it: each character is a byte of every delivery.
const sidLen = 11

// sid is a guest's sender id: a keyed hash of this node and the
// connection, so it is unique across a cluster's nodes, cannot be guessed
// from the connection's id, and is another after a restart (the key is
// the hub's, made at New). A signed-in user has none: its user id says
// which messages are its own. Computed when needed, never stored.
func (h *Hub) sid(c *client) string {
	if c.who != nil {
		return ""
	}
	buf := make([]byte, 0, len(h.sidKey)+len(h.node)+1+20)
	buf = append(buf, h.sidKey[:]...)
	buf = append(buf, h.node...)
	buf = append(buf, 0)
	buf = strconv.AppendUint(buf, uint64(c.id), 10)
	sum := sha256.Sum256(buf)
	return base64.RawURLEncoding.EncodeToString(sum[:8])
}

// validSID checks a sender id from the bus.
func validSID(s string) bool {
	if len(s) != sidLen {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == 8
}

// owns reports whether the message t is c's own: by user id for a
// signed-in client, by sender id for a guest (so a guest that reconnects,
// or takes another's old nick, owns nothing it did not say on this
// connection).
func (h *Hub) owns(c *client, t *published) bool {
	if u := c.userID(); u != "" {
		return t.User == u
	}
	return t.SID != "" && t.SID == h.sid(c)
}

// maxExcerpt is the most characters of a message a reply quotes.
const maxExcerpt = 100

// maxExcerptBytes bounds a reply's excerpt from the bus.
const maxExcerptBytes = maxExcerpt*utf8.UTFMax + len("…")

// excerpt is the start of text a reply quotes: its first maxExcerpt
// characters, and an ellipsis if there were more.
func excerpt(text string) string {
	n := 0
	for i := range text {
		if n == maxExcerpt {
			return text[:i] + "…"
		}
		n++
	}
	return text
}

// checkReply refuses a reply reference no node of this server could have made.
func checkReply(ref *protocol.ReplyRef) error {
	switch {
	case ref.Seq <= 0:
		return fmt.Errorf("seq %d", ref.Seq)
	case len(ref.Excerpt) > maxExcerptBytes:
		return fmt.Errorf("an excerpt of %d bytes", len(ref.Excerpt))
	case !utf8.ValidString(ref.Excerpt) || bytes.ContainsFunc([]byte(ref.Excerpt), badTextRune):
		return errors.New("an excerpt with control characters")
	case ref.User != "" && validUser(ref.User) != nil:
		return fmt.Errorf("bad user: %w", validUser(ref.User))
	case ref.From == systemNick:
		return nil
	}
	if shown, err := normalizeNick(ref.From); err != nil || shown != ref.From {
		return fmt.Errorf("bad sender %q", ref.From)
	}
	return nil
}

// message finds message seq in r's history for an edit, a delete or a
// reply: there, a message (not an edit or a delete), not deleted. It
// returns its index and decoded form. Callers hold r.mu.
func (r *room) message(seq int64) (int, published, bool) {
	i := r.search(seq)
	if i >= r.histN() || r.at(i).seq != seq || kindOf(r.at(i).msg) != kindMessage {
		return 0, published{}, false
	}
	var t published
	if decodeStrict(r.at(i).msg, &t) != nil || t.Deleted != 0 {
		return 0, published{}, false
	}
	return i, t, true
}

// target finds, for c's edit, delete or reply req, the message it names
// in room r, answering c with the error if there is none.
func (h *Hub) target(c *client, req *protocol.Request, r *room, seq int64) (published, bool) {
	if seq <= 0 {
		h.fail(c, req, protocol.CodeBadRequest, fmt.Sprintf("%s needs the seq of a message of the room", req.Type))
		return published{}, false
	}
	r.mu.Lock()
	_, t, ok := r.message(seq)
	r.mu.Unlock()
	if !ok {
		h.fail(c, req, protocol.CodeNotFound, fmt.Sprintf("room %q holds no message %d: deleted, not a message, or older than its history", r.name, seq))
	}
	return t, ok
}

// edit changes the text of one of c's messages.
func (h *Hub) edit(c *client, req *protocol.Request) {
	r, ok := h.speaking(c, req)
	if !ok {
		return
	}
	t, ok := h.target(c, req, r, req.Seq)
	switch {
	case !ok:
		return
	case !h.owns(c, &t):
		h.fail(c, req, protocol.CodeForbidden, "you may edit only your own messages")
		return
	case h.tooLate(&t):
		h.fail(c, req, protocol.CodeTooLate, fmt.Sprintf("messages may be edited for %v after they are said", h.cfg.EditWindow))
		return
	}
	h.publishEntry(c, req, r, published{Edits: req.Seq, From: c.nick, User: c.userID(), SID: h.sid(c), Text: req.Text, TS: now()})
}

// del deletes one of c's messages, or, for a moderator of the room,
// anyone's.
func (h *Hub) del(c *client, req *protocol.Request) {
	r := c.room(req.Room)
	if r == nil {
		h.fail(c, req, protocol.CodeNotInRoom, fmt.Sprintf("join %q before deleting there", req.Room))
		return
	}
	if req.Text != "" {
		h.fail(c, req, protocol.CodeBadRequest, "a delete has no text")
		return
	}
	t, ok := h.target(c, req, r, req.Seq)
	if !ok {
		return
	}
	own := h.owns(c, &t)
	mod := c.who != nil && auth.Matches(c.who.moderate, r.name)
	switch {
	case !own && !mod:
		h.fail(c, req, protocol.CodeForbidden, "you may delete only your own messages (or a moderate claim for the room)")
		return
	case !mod && h.tooLate(&t):
		h.fail(c, req, protocol.CodeTooLate, fmt.Sprintf("messages may be deleted for %v after they are said", h.cfg.EditWindow))
		return
	}
	h.publishEntry(c, req, r, published{Deletes: req.Seq, From: c.nick, User: c.userID(), SID: h.sid(c), Mod: !own, TS: now()})
}

// tooLate reports whether message t is past the edit window.
func (h *Hub) tooLate(t *published) bool {
	return h.cfg.EditWindow > 0 && now()-t.TS > h.cfg.EditWindow.Milliseconds()
}

// replyTo is the reference a say answering message seq of r carries, or
// false (c answered) when r has no such message.
func (h *Hub) replyTo(c *client, req *protocol.Request, r *room) (*protocol.ReplyRef, bool) {
	t, ok := h.target(c, req, r, req.Reply)
	if !ok {
		return nil, false
	}
	return &protocol.ReplyRef{Seq: req.Reply, From: t.From, User: t.User, Excerpt: excerpt(t.Text)}, true
}

// applyEntry checks an edit or delete p, numbered seq, against r's
// history and applies it there: the message it names must be in the
// history, before it, and be its sender's (or, for a delete, a
// moderator's doing). It reports false for one that may not be applied
// (dropped: its sender's node checked the same, so only a forged entry,
// or one whose message this node's history no longer has, fails).
// Callers hold r.mu.
func (h *Hub) applyEntry(r *room, seq int64, p *published, now int64) bool {
	target := max(p.Edits, p.Deletes)
	if target >= seq {
		h.dropped("message", fmt.Errorf("room %q: entry %d changes a later one, %d", r.name, seq, target))
		return false
	}
	i, t, ok := r.message(target)
	if !ok {
		return false // gone from the history: nothing here to change
	}
	if !mayChange(p, &t) {
		h.dropped("message", fmt.Errorf("room %q: entry %d by %q changes message %d of %q", r.name, seq, p.From, target, t.From))
		return false
	}
	if p.Edits != 0 {
		t.Text, t.Edited = p.Text, p.TS
	} else {
		t.Text, t.Reply, t.Deleted = "", nil, p.TS
	}
	r.replace(i, &t)
	if p.Deletes != 0 { // its edits' texts and what replies quote of it go too
		for j := i + 1; j < r.histN(); j++ {
			m := r.at(j)
			var q published
			switch kindOf(m.msg) {
			case kindEdit:
				if decodeStrict(m.msg, &q) == nil && q.Edits == target {
					q.Text = ""
					r.replace(j, &q)
				}
			case kindMessage:
				if bytes.Contains(m.msg, []byte(`"reply"`)) && decodeStrict(m.msg, &q) == nil && q.Reply != nil && q.Reply.Seq == target {
					q.Reply.Excerpt = ""
					r.replace(j, &q)
				}
			}
		}
	}
	return true
}

// replace puts p as the history's message i. Callers hold r.mu.
func (r *room) replace(i int, p *published) {
	b, err := marshal(p)
	if err != nil {
		return
	}
	m := r.at(i)
	r.histBytes += r.encodedLen(m.seq, b) - r.encodedLen(m.seq, m.msg)
	m.msg = b
}
