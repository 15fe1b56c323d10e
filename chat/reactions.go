package chat

import (
	"encoding/json"
	"fmt"
	"slices"
	"unicode"
	"unicode/utf8"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// Reactions: a member toggles an emoji on a message of the room's history.
// A toggle is an entry of the room's log (so every node, and a replay of
// the log, count the same), but it is not sent as it comes: a room's
// toggles are applied to its messages' counts and sent together, as one
// reactions event, at most every PresenceInterval and before the room's
// next message, so a storm of reactions costs each member a few frames a
// second, not one per reaction. The history does not keep the toggles: a
// joiner gets the counts of the messages it is sent.

// Limits of reactions.
const (
	maxEmojiBytes = 32  // an emoji (a sequence of code points: flags, skin tones, ZWJ families)
	maxEmojis     = 20  // kinds of emoji on one message; a new one past it is dropped
	maxReactors   = 500 // who reacted with one emoji, each counted and able to take it back; past it dropped
	maxWho        = 10  // names a reactions event gives per emoji
	// maxRoomReactors bounds the reactions a room holds on all its
	// messages (about 80 bytes each: a room's reactions weigh about what
	// its 64 KiB history does); past it a new one is dropped. Without it,
	// 20 emoji x 500 reactors x 100 messages let a few hundred connections
	// pin 100 MB in one room.
	maxRoomReactors = 2000
)

// reactor is who reacted: "u:" and a user id, or "g:" and a guest's
// sender id; and its nick then.
type reactor struct{ id, nick string }

type emojiReacts struct {
	emoji string
	who   []reactor
}

// validEmoji checks a reaction's emoji: 1 to maxEmojiBytes of valid
// UTF-8, no letters, digits, spaces or controls (an emoji, not a word),
// and none of the characters a text may not hold.
func validEmoji(s string) bool {
	if s == "" || len(s) > maxEmojiBytes || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsSpace(r) || unicode.IsControl(r) || badTextRune(r) || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// react toggles c's reaction req.Emoji on message req.Seq of a room it is
// in.
func (h *Hub) react(c *client, req *protocol.Request) {
	r := c.room(req.Room)
	if r == nil {
		h.fail(c, req, protocol.CodeNotInRoom, fmt.Sprintf("join %q before reacting there", req.Room))
		return
	}
	if !validEmoji(req.Emoji) {
		h.fail(c, req, protocol.CodeBadRequest, fmt.Sprintf("emoji: 1 to %d bytes of symbols, no letters, digits or spaces", maxEmojiBytes))
		return
	}
	if code, msg := h.maySay(c, r.name); code != "" {
		h.fail(c, req, code, msg)
		return
	}
	if _, ok := h.target(c, req, r, req.Seq); !ok {
		return
	}
	h.publishEntry(c, req, r, published{React: req.Seq, Emoji: req.Emoji, From: c.nick, User: c.userID(), SID: h.sid(c), TS: now()})
}

// applyReaction toggles p's reaction, numbered seq, on its message, if
// the history holds it; it is told to the members with the room's next
// reactions event either way (seq is counted). Callers hold r.mu.
func (h *Hub) applyReaction(r *room, seq int64, p *published) {
	defer h.markReacted(r, seq)
	if p.React >= seq {
		return
	}
	if _, _, ok := r.message(p.React); !ok {
		return
	}
	var id string
	switch {
	case p.User != "":
		id = "u:" + p.User
	case p.SID != "":
		id = "g:" + p.SID
	case p.System:
		id = "s:"
	default:
		return
	}
	if r.reacts == nil {
		r.reacts = make(map[int64][]emojiReacts)
	}
	list := r.reacts[p.React]
	i := slices.IndexFunc(list, func(e emojiReacts) bool { return e.emoji == p.Emoji })
	switch {
	case i < 0 && (len(list) >= maxEmojis || r.reactors >= maxRoomReactors):
		return
	case i < 0:
		list = append(list, emojiReacts{emoji: p.Emoji, who: []reactor{{id, p.From}}})
		r.reactors++
	default:
		who := list[i].who
		if j := slices.IndexFunc(who, func(x reactor) bool { return x.id == id }); j >= 0 {
			who = slices.Delete(who, j, j+1) // taken back
			r.reactors--
		} else if len(who) < maxReactors && r.reactors < maxRoomReactors {
			who = append(who, reactor{id, p.From})
			r.reactors++
		} else {
			return
		}
		if list[i].who = who; len(who) == 0 {
			list = slices.Delete(list, i, i+1)
		}
	}
	if len(list) == 0 {
		delete(r.reacts, p.React)
	} else {
		r.reacts[p.React] = list
	}
	if r.reactChanged == nil {
		r.reactChanged = make(map[int64]struct{})
	}
	r.reactChanged[p.React] = struct{}{}
}

// dropReactions forgets the reactions of message seq (it left the
// history). Callers hold r.mu.
func (r *room) dropReactions(seq int64) {
	for _, e := range r.reacts[seq] {
		r.reactors -= len(e.who)
	}
	delete(r.reacts, seq)
}

// markReacted counts reaction entry seq and queues r for the next
// reactions event. Callers hold r.mu.
func (h *Hub) markReacted(r *room, seq int64) {
	r.reactSeq = seq
	if r.reactQueued || r.isLoading() {
		return
	}
	r.reactQueued = true
	h.dirtyMu.Lock()
	h.reacted = append(h.reacted, r)
	h.dirtyMu.Unlock()
}

// flushReactions sends r's members the reactions changed since the last
// event, numbered with the last reaction entry: one frame for all of
// them. Callers hold r.mu.
func (h *Hub) flushReactions(r *room) {
	if r.reactSeq <= r.reactSent {
		return
	}
	ev := protocol.Reactions{Type: protocol.EventReactions, Room: r.name, Seq: r.reactSeq, Messages: r.changedReactions()}
	r.reactSent = r.reactSeq
	clear(r.reactChanged)
	if b, err := marshal(ev); err == nil {
		_, _ = r.group.Send(engine.Text, b)
		h.stats.reactionFrames.Add(1)
	}
}

// changedReactions is the reactions of the messages changed since the
// last event, by sequence number. Callers hold r.mu.
func (r *room) changedReactions() []protocol.MessageReact {
	seqs := make([]int64, 0, len(r.reactChanged))
	for s := range r.reactChanged {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	out := make([]protocol.MessageReact, 0, len(seqs))
	for _, s := range seqs {
		out = append(out, protocol.MessageReact{Seq: s, Reactions: seen(r.reacts[s])})
	}
	return out
}

// seen is list as members see it.
func seen(list []emojiReacts) []protocol.ReactionSeen {
	out := make([]protocol.ReactionSeen, 0, len(list))
	for _, e := range list {
		who := make([]string, 0, min(len(e.who), maxWho))
		for _, x := range e.who[:min(len(e.who), maxWho)] {
			who = append(who, x.nick)
		}
		out = append(out, protocol.ReactionSeen{Emoji: e.emoji, Count: len(e.who), Who: who})
	}
	return out
}

// reactionsOf is the reactions of the history's messages, for a joiner
// (nil if none has any). Callers hold r.mu.
func (r *room) reactionsOf() json.RawMessage {
	var msgs []protocol.MessageReact
	for s, list := range r.reacts {
		msgs = append(msgs, protocol.MessageReact{Seq: s, Reactions: seen(list)})
	}
	if len(msgs) == 0 {
		return nil
	}
	slices.SortFunc(msgs, func(a, b protocol.MessageReact) int { return int(a.Seq - b.Seq) })
	b, err := marshal(protocol.Reactions{Type: protocol.EventReactions, Room: r.name, Messages: msgs})
	if err != nil {
		return nil
	}
	return b
}

// flushAllReactions sends the reactions events of the rooms queued.
func (h *Hub) flushAllReactions() {
	h.dirtyMu.Lock()
	rooms := h.reacted
	h.reacted = nil
	h.dirtyMu.Unlock()
	for _, r := range rooms {
		r.mu.Lock()
		r.reactQueued = false
		h.flushReactions(r)
		r.mu.Unlock()
	}
}
