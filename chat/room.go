package chat

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// room is one chat room. Its lock is held while a message delivered by the
// broker enters the history and goes to the members, so members receive
// messages in sequence order; membership changes hold it too.
type room struct {
	name     string
	nameJSON []byte // name as a JSON string, for splicing messages
	group    *engine.Group

	// loading is closed once the room's state is in from the broker
	// (makeRoom); until then broker deliveries wait in early and resetTo.
	loading chan struct{}
	early   []earlyMessage
	resetTo *RoomState

	creator creatorKey // who made it (the zero key: the server), for eviction

	mu        sync.Mutex
	removed   bool                       // expired; joiners must make a new room
	members   map[engine.ClientID]string // id -> nick
	users     map[string]int             // signed-in members' connections here, by user id (nil until one joins)
	dupes     int                        // members that are another connection of a user already here
	epoch     int64                      // the room log's epoch (RoomState.Epoch)
	seq       int64                      // the latest message's sequence number
	hist      []stored                   // encoded messages, oldest at hist[histHead]
	histHead  int                        // the oldest stored message's index in hist
	histBytes int                        // the stored messages' size
	keep      historyLimits              // what the history keeps

	// Reactions (reactions.go): by message, those changed since the last
	// reactions event, the last reaction entry and the last one sent.
	reacts              map[int64][]emojiReacts
	reactChanged        map[int64]struct{}
	reactSeq, reactSent int64
	reactors            int // in reacts, at most maxRoomReactors
	reactQueued         bool

	// Presence changes since the last presence message: this node's
	// (told to the other nodes too) and the other nodes' (told here only).
	joined, left   []string
	leaving        map[string]time.Time // gone members not told yet (PresenceGrace): by nick, when (a map: a reconnection storm of thousands looks each up)
	renamed        []protocol.Renamed
	rjoined, rleft []string
	rrenamed       []protocol.Renamed
	sendFull       bool // another node asked for this node's member list
	asked          bool // this node asked for the others' lists and awaits them
	lastLocal      int  // this node's member count as last told to the others
	lastCount      int
	lastSent       time.Time // when the last presence message went out
	backoff        int       // the room's presence interval, in PresenceIntervals (presenceMaxBackoff)
	nextPresence   time.Time // no presence message before this

	// Other nodes' members, by node.
	remote map[string]*remoteMembers

	// A large room's member sample for joiners, encoded, rebuilt at most
	// every LargeRoomCounts: building it per joiner was a third of the
	// server's work in a connect storm.
	sample     json.RawMessage
	sampleAt   time.Time
	dirty      bool
	emptySince time.Time
}

// stored is a message in a room's history: the published object as
// sanitized, not as members receive it (encode adds the room and the
// sequence number again on replay). Every node of a cluster keeps every
// room's history, so the bytes the encoding adds, about 40 a message, were
// kept seven times over in the 100,000-client run.
type stored struct {
	seq int64
	at  int64 // when it was stored, Unix ns
	msg []byte
}

// historyLimits says which messages a room's history keeps: the newest
// count, and any younger than window (so that a client that reconnects
// within it resumes without a gap however busy the room is), never more
// than bytes in all.
type historyLimits struct {
	count  int
	window int64 // ns; 0: none
	bytes  int
	maxAge int64 // ns: older messages go whatever the others keep; 0: none
}

// remoteMembers is what this node knows of another node's members of a
// room: their count, and their nicks while the room is small (nil when
// not known).
type remoteMembers struct {
	count int
	nicks map[string]struct{}
}

func newRoom(name string, group *engine.Group, keep historyLimits) *room {
	nameJSON, _ := json.Marshal(name)
	return &room{
		loading:  make(chan struct{}),
		name:     name,
		nameJSON: nameJSON,
		group:    group,
		members:  make(map[engine.ClientID]string),
		keep:     keep,
	}
}

// appendHistory stores msg (a sanitized published object, which it
// keeps: the caller gives it up) with sequence number seq at now (Unix
// ns), then drops what the limits no longer keep. Callers hold r.mu.
func (r *room) appendHistory(seq int64, msg []byte, now int64) {
	if len(r.hist) == cap(r.hist) && r.histHead > 0 {
		// Full: slide the live part down, into a smaller array if the
		// room was much busier once than it is now.
		n := copy(r.hist, r.hist[r.histHead:])
		clear(r.hist[n:])
		r.hist, r.histHead = r.hist[:n], 0
		if c := cap(r.hist); c > 64 && n < c/4 {
			r.hist = append(make([]stored, 0, 2*n), r.hist...)
		}
	}
	r.hist = append(r.hist, stored{seq: seq, at: now, msg: msg})
	r.histBytes += r.encodedLen(seq, msg)
	r.trimHistory(now)
}

// trimHistory drops the oldest messages the limits no longer keep.
// Callers hold r.mu.
func (r *room) trimHistory(now int64) {
	for n := r.histN(); n > 0; n-- {
		old := &r.hist[r.histHead]
		overCount := n > r.keep.count && (r.keep.window <= 0 || now-old.at > r.keep.window)
		expired := r.keep.maxAge > 0 && now-old.at > r.keep.maxAge
		if r.histBytes <= r.keep.bytes && !overCount && !expired {
			return
		}
		r.histBytes -= r.encodedLen(old.seq, old.msg)
		r.dropReactions(old.seq)
		*old = stored{}
		r.histHead++
	}
}

// histN is the number of stored messages. Callers hold r.mu.
func (r *room) histN() int { return len(r.hist) - r.histHead }

// encode appends to b the event members receive from msg, as published
// (a JSON object): {"type":"message","room":...,"seq":seq, then msg's
// fields ("edited" or "deleted" for an edit or a delete: kindOf). It
// reports false for a msg that is not a JSON object.
func (r *room) encode(b []byte, seq int64, msg []byte) ([]byte, bool) {
	if len(msg) < 2 || msg[0] != '{' || msg[len(msg)-1] != '}' {
		return b, false
	}
	b = append(b, `{"type":"`...)
	b = append(b, kindOf(msg).event()...)
	b = append(b, `","room":`...)
	b = append(b, r.nameJSON...)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	if hasFields(msg) {
		b = append(b, ',')
	}
	return append(b, msg[1:]...), true
}

// encodedLen is the length of encode's output for msg, an object.
func (r *room) encodedLen(seq int64, msg []byte) int {
	n := len(`{"type":"","room":,"seq":`) + len(kindOf(msg).event()) + len(r.nameJSON) + digits(seq) + len(msg) - 1
	if hasFields(msg) {
		n++ // the comma
	}
	return n
}

// hasFields reports whether the object msg is not empty: encode puts a
// comma between its own fields and msg's.
func hasFields(msg []byte) bool { return len(bytes.TrimSpace(msg[1:len(msg)-1])) > 0 }

// digits is the length of n in decimal.
func digits(n int64) int {
	d := 1
	if n < 0 {
		d, n = 2, -n
	}
	for ; n >= 10; n /= 10 {
		d++
	}
	return d
}

// resetHistory empties the history. Callers hold r.mu.
func (r *room) resetHistory() {
	clear(r.reacts)
	clear(r.reactChanged)
	r.reactSeq, r.reactSent, r.reactors = 0, 0, 0
	clear(r.hist)
	r.hist, r.histHead, r.histBytes = r.hist[:0], 0, 0
}

// at returns the i-th stored message, oldest first. Callers hold r.mu.
func (r *room) at(i int) *stored { return &r.hist[r.histHead+i] }

// history returns up to limit stored messages with after < seq < before
// (before 0: no upper bound), the newest of them, oldest first; and whether
// messages after `after` are missing from the store. Callers hold r.mu.
func (r *room) history(after, before int64, limit int) ([]json.RawMessage, bool) {
	if r.keep.maxAge > 0 {
		r.trimHistory(time.Now().UnixNano()) // an idle room's messages age too
	}
	gap := after >= 0 && r.seq > after && (r.histN() == 0 || r.at(0).seq-1 > after)
	// Sequence numbers grow along the store: find the window by bisection
	// (after+1 would overflow for the largest after there is).
	lo := r.histN()
	if after < math.MaxInt64 {
		lo = r.search(after + 1)
	}
	hi := r.histN()
	if before > 0 {
		hi = r.search(before)
	}
	if limit <= 0 || lo >= hi {
		return nil, gap
	}
	lo = max(lo, hi-limit)
	// Encoded again, into one buffer for all of them.
	size := 0
	for i := lo; i < hi; i++ {
		size += r.encodedLen(r.at(i).seq, r.at(i).msg)
	}
	buf := make([]byte, 0, size)
	out := make([]json.RawMessage, 0, hi-lo)
	for i := lo; i < hi; i++ {
		m := r.at(i)
		start := len(buf)
		buf, _ = r.encode(buf, m.seq, m.msg)
		out = append(out, buf[start:len(buf):len(buf)])
	}
	return out, gap
}

// search returns the index of the first stored message with a sequence
// number of at least seq. Callers hold r.mu.
func (r *room) search(seq int64) int {
	lo, hi := 0, r.histN()
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.at(m).seq < seq {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// addMember counts a connection of user ("" a guest) joining, and
// reports whether it is a new member: a guest, or a user's first
// connection here. Callers hold r.mu.
func (r *room) addMember(user string) bool {
	if user == "" {
		return true
	}
	if r.users == nil {
		r.users = make(map[string]int)
	}
	n := r.users[user]
	r.users[user] = n + 1
	if n > 0 {
		r.dupes++
	}
	return n == 0
}

// removeMember counts a connection of user leaving, and reports whether
// the member left: a guest, or a user's last connection here. Callers
// hold r.mu.
func (r *room) removeMember(user string) bool {
	if user == "" {
		return true
	}
	n := r.users[user]
	switch {
	case n <= 1:
		delete(r.users, user)
		return true
	default:
		r.users[user] = n - 1
		r.dupes--
		return false
	}
}

// local is the room's members on this node: users once, however many
// connections they have. Callers hold r.mu.
func (r *room) local() int { return len(r.members) - r.dupes }

// count is the room's members across the cluster. While every node's
// names are known (a small room), a name on several nodes (a user
// connected to two) counts once; otherwise the nodes' counts add up.
// Callers hold r.mu.
func (r *room) count() int {
	n := r.local()
	known := true
	for _, rm := range r.remote {
		n += rm.count
		known = known && rm.nicks != nil
	}
	if !known || len(r.remote) == 0 {
		return n
	}
	names := make(map[string]struct{}, n)
	for _, nick := range r.members {
		names[nick] = struct{}{}
	}
	for _, rm := range r.remote {
		for nick := range rm.nicks {
			names[nick] = struct{}{}
		}
	}
	return len(names)
}

// localNames returns this node's members' nicks, each once. Callers hold
// r.mu.
func (r *room) localNames() []string {
	out := make([]string, 0, r.local())
	if r.dupes == 0 {
		for _, nick := range r.members {
			out = append(out, nick)
		}
		return out
	}
	seen := make(map[string]struct{}, r.local())
	for _, nick := range r.members {
		if _, ok := seen[nick]; !ok {
			seen[nick] = struct{}{}
			out = append(out, nick)
		}
	}
	return out
}

// largeSample returns the cached, encoded member sample of a large room,
// rebuilt when older than every. Callers hold r.mu.
func (r *room) largeSample(n int, every time.Duration, now time.Time) json.RawMessage {
	if r.sample == nil || now.Sub(r.sampleAt) >= every {
		nicks, _ := r.memberSample(n)
		r.sample, _ = json.Marshal(nicks)
		r.sampleAt = now
	}
	return r.sample
}

// memberSample returns up to n members' nicks, this node's first, sorted,
// and whether that is not everyone. Callers hold r.mu.
func (r *room) memberSample(n int) ([]string, bool) {
	total := r.count()
	out := make([]string, 0, min(n, total))
	seen := make(map[string]struct{}, min(n, total))
	add := func(nick string) {
		if _, dup := seen[nick]; !dup && len(out) < n {
			seen[nick] = struct{}{}
			out = append(out, nick)
		}
	}
	for _, nick := range r.members {
		if len(out) == n {
			break
		}
		add(nick)
	}
	for _, rm := range r.remote {
		for nick := range rm.nicks {
			if len(out) == n {
				break
			}
			add(nick)
		}
	}
	slices.Sort(out)
	return out, total > len(out)
}

// earlyMessage is a room message the broker delivered while the room was
// loading.
type earlyMessage struct {
	seq int64
	msg []byte
}

// maxEarly bounds the messages a loading room holds: a history's worth
// at most, the oldest dropped first.
const maxEarly = 4096

// isLoading reports whether the room's state is not in yet. Callers hold
// r.mu.
func (r *room) isLoading() bool {
	select {
	case <-r.loading:
		return false
	default:
		return true
	}
}

// holdEarly keeps a message delivered while the room loads. Callers hold
// r.mu.
func (r *room) holdEarly(seq int64, msg []byte) {
	if len(r.early) == maxEarly {
		r.early = append(r.early[:0], r.early[1:]...)
	}
	r.early = append(r.early, earlyMessage{seq: seq, msg: msg})
}

// nameLocks serialises, per room name, making a room and removing it
// (the broker's Subscribe and Unsubscribe), without one room's round
// trips holding up another's. A name's lock lives while it is wanted.
type nameLocks struct {
	mu sync.Mutex
	m  map[string]*nameLock
}

type nameLock struct {
	mu   sync.Mutex
	refs int
}

// lock locks name and returns its unlock.
func (l *nameLocks) lock(name string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*nameLock)
	}
	nl := l.m[name]
	if nl == nil {
		nl = &nameLock{}
		l.m[name] = nl
	}
	nl.refs++
	l.mu.Unlock()
	nl.mu.Lock()
	return func() {
		nl.mu.Unlock()
		l.mu.Lock()
		if nl.refs--; nl.refs == 0 {
			delete(l.m, name)
		}
		l.mu.Unlock()
	}
}
