package chat

import (
	"strconv"
	"strings"
	"sync"
	"time"
)

// Unread notifications: a mention of a signed-in user, or a DM to one,
// that none of its connections has read within Config.NotifyDelay is
// handed to the Config.Notifier (notify.Poster posts it to a backend,
// which may send a push). Read means: the user's read position in the
// room reached the mention (read), or one of its connections marked its
// DMs read (read with dm). Each node decides for what it delivered (a
// mention to its members, a DM a client of it sent to a user), so a user
// connected to two nodes may be notified of a mention twice: a
// Notification's ID is the same on both, for the backend to drop one.

// Notification is an unread mention or DM.
type Notification struct {
	ID       string `json:"id"`   // the same however many nodes post it
	Kind     string `json:"kind"` // "mention" or "dm"
	User     string `json:"user"` // who has not read it
	Room     string `json:"room,omitempty"`
	Seq      int64  `json:"seq,omitempty"` // a mention's, in the room's Epoch
	Epoch    int64  `json:"epoch,omitempty"`
	From     string `json:"from"`
	FromUser string `json:"from_user,omitempty"`
	Text     string `json:"text"` // its first 100 characters
	TS       int64  `json:"ts"`   // when it was said, Unix ms
}

// Notifier takes unread notifications. Notify must not block.
type Notifier interface {
	Notify(Notification)
}

// MaxPendingNotes bounds the notifications a hub waits on (NotifyDelay);
// past it a new one is dropped, and counted.
const MaxPendingNotes = 100000

// notes are the notifications waiting for NotifyDelay, by user then ID.
type notes struct {
	mu sync.Mutex
	m  map[string]map[string]*note
	n  int
}

type note struct {
	Notification
	timer *time.Timer
}

// schedule waits NotifyDelay, then hands n to the Notifier unless it was
// read meanwhile.
func (h *Hub) schedule(n Notification) {
	if h.cfg.Notifier == nil {
		return
	}
	h.notes.mu.Lock()
	defer h.notes.mu.Unlock()
	if h.notes.m == nil {
		h.notes.m = make(map[string]map[string]*note)
	}
	byID := h.notes.m[n.User]
	if byID[n.ID] != nil {
		return
	}
	if h.notes.n >= MaxPendingNotes {
		h.stats.notesDropped.Add(1)
		return
	}
	if byID == nil {
		byID = make(map[string]*note)
		h.notes.m[n.User] = byID
	}
	nt := &note{Notification: n}
	nt.timer = time.AfterFunc(h.cfg.NotifyDelay, func() {
		if h.unnote(n.User, n.ID) {
			h.stats.notified.Add(1)
			h.cfg.Notifier.Notify(n)
		}
	})
	byID[n.ID] = nt
	h.notes.n++
}

// unnote forgets a pending notification; false if it was not pending.
func (h *Hub) unnote(user, id string) bool {
	h.notes.mu.Lock()
	defer h.notes.mu.Unlock()
	byID := h.notes.m[user]
	nt := byID[id]
	if nt == nil {
		return false
	}
	nt.timer.Stop()
	delete(byID, id)
	if len(byID) == 0 {
		delete(h.notes.m, user)
	}
	h.notes.n--
	return true
}

// readNotes drops user's pending notifications that are read: those
// match reports true for.
func (h *Hub) readNotes(user string, match func(n *Notification) bool) {
	h.notes.mu.Lock()
	var read []string
	for id, nt := range h.notes.m[user] {
		if match(&nt.Notification) {
			read = append(read, id)
		}
	}
	h.notes.mu.Unlock()
	for _, id := range read {
		if h.unnote(user, id) {
			h.stats.notesRead.Add(1)
		}
	}
}

// stopNotes drops every pending notification (the hub stops).
func (h *Hub) stopNotes() {
	h.notes.mu.Lock()
	defer h.notes.mu.Unlock()
	for _, byID := range h.notes.m {
		for _, nt := range byID {
			nt.timer.Stop()
		}
	}
	h.notes.m, h.notes.n = nil, 0
}

// noteMentions schedules a notification for each signed-in member of r
// on this node that msg (published p, numbered seq) mentions (@nick),
// but its sender. Callers hold r.mu.
func (h *Hub) noteMentions(r *room, seq int64, p *published) {
	if h.cfg.Notifier == nil || len(r.users) == 0 || !strings.Contains(p.Text, "@") {
		return
	}
	seen := map[string]bool{}
	for _, m := range mentioned(p.Text) {
		key, err := nickKey(m)
		if err != nil {
			continue
		}
		user := h.userByNick(key)
		if user == "" || seen[user] || user == p.User || r.users[user] == 0 {
			continue
		}
		seen[user] = true
		h.schedule(Notification{ID: "mention:" + user + ":" + r.name + ":" + strconv.FormatInt(r.epoch, 10) + ":" + strconv.FormatInt(seq, 10),
			Kind: "mention", User: user, Room: r.name, Seq: seq, Epoch: r.epoch, From: p.From, FromUser: p.User, Text: excerpt(p.Text), TS: p.TS})
	}
}

// mentioned returns the nicks text mentions: "@" and a nick's
// characters, at the start or after a character that cannot be in one.
func mentioned(text string) []string {
	var out []string
	for i := 0; i < len(text); i++ {
		if text[i] != '@' || i > 0 && nickByte(text[i-1]) {
			continue
		}
		j := i + 1
		for j < len(text) && nickByte(text[j]) {
			j++
		}
		if j > i+1 {
			out = append(out, strings.TrimRight(text[i+1:j], ".-"))
		}
		i = j - 1
	}
	return out
}

// nickByte reports whether b may be part of a nick in a mention (ASCII
// letters and digits, '_', '-', '.', and any byte of a multibyte
// character).
func nickByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '-' || b == '.' || b >= 0x80
}

// noteDM schedules a notification of a DM a client of this node sent to
// a signed-in user, and returns its ID ("" if none).
func (h *Hub) noteDM(user string, from *client, text string, ts int64) string {
	if user == from.userID() || h.cfg.Notifier == nil {
		return ""
	}
	id := "dm:" + user + ":" + strconv.FormatUint(uint64(from.id), 10) + "@" + h.node + ":" + strconv.FormatInt(ts, 10)
	h.schedule(Notification{ID: id, Kind: "dm", User: user, From: from.nick, FromUser: from.userID(), Text: excerpt(text), TS: ts})
	return id
}
