package chat

import (
	"log/slog"
	"strings"
	"time"

	"github.com/parleyhq/parley/auth"
	"github.com/parleyhq/parley/internal/cfgerr"
)

// Defaults applied to zero Config fields.
const (
	DefaultRoom             = "lobby"
	DefaultHistorySize      = 100
	DefaultHistoryBytes     = 64 << 10
	DefaultResumeWindow     = 10 * time.Second
	DefaultHistoryTTL       = 10 * time.Minute
	DefaultMaxTextLength    = 2000
	DefaultMaxRooms         = 10
	DefaultMaxRoomsTotal    = 10000
	DefaultRoomCreateRate   = 10 // rooms per minute per address
	DefaultRateLimit        = 10 // requests per second
	DefaultRateBurst        = 20
	DefaultPresenceInterval = 250 * time.Millisecond
	DefaultPresenceListMax  = 100
	DefaultLargeRoom        = 200
	DefaultLargeRoomCounts  = 5 * time.Second
	DefaultMaxRules         = 100000
	DefaultEditWindow       = time.Hour
	DefaultNotifyDelay      = 30 * time.Second
	DefaultPresenceGrace    = 5 * time.Second
)

// Config configures a Hub. The zero value is valid: zero fields take the
// defaults named beside them; where a field says so, -1 turns it off.
type Config struct {
	// DefaultRoom is the room every client joins on connect and where
	// plain-text messages go. Default "lobby".
	DefaultRoom string

	// HistorySize is the number of messages each room keeps at least and
	// replays to joiners. Default 100.
	HistorySize int

	// ResumeWindow: a room also keeps every message younger than this,
	// however many, so that a client that reconnects within it and joins
	// with `since` gets everything it missed even in a busy room (within
	// HistoryBytes). Default 10 s; -1 keeps HistorySize messages only.
	ResumeWindow time.Duration

	// HistoryMaxAge, when positive, drops a room's messages older than
	// this from its history, whatever HistorySize and ResumeWindow keep.
	// Default 0: kept by count (and ResumeWindow) only.
	HistoryMaxAge time.Duration

	// HistoryBytes caps the encoded size of a room's history, which is
	// also the most a join's replay can send: the oldest messages go
	// first. With MaxRooms rooms a client's replays stay under the
	// engine's SendQueueHardLimit (10 x 64 KiB against 1 MiB by
	// default). Default 64 KiB.
	HistoryBytes int

	// HistoryTTL is how long an empty room's history is kept before the
	// room is removed. Default 10 min.
	HistoryTTL time.Duration

	// MaxTextLength caps a message's text, in bytes. Default 2000.
	MaxTextLength int

	// EditWindow is how long after saying a message its sender may edit
	// or delete it (a moderator deletes at any time, as long as the
	// history holds it). Default 1 h; -1: as long as the history holds it.
	EditWindow time.Duration

	// MaxRooms caps the rooms one client is in at once. Default 10.
	MaxRooms int

	// MaxRoomsTotal caps the rooms the hub holds, empty ones (kept for
	// HistoryTTL) included. At the cap, an empty room is removed to make a
	// new one: first one nobody ever said anything in, of the address with
	// the most live rooms, then the one empty longest; with none empty, a
	// join that would make a room gets room_limit. Default 10,000.
	MaxRoomsTotal int

	// RoomCreateRate is how many rooms one address (an IPv4 address, an
	// IPv6 /56) may make a minute on all its connections, in bursts of as
	// many, and its network (an IPv4 /24, an IPv6 /48) four times as many;
	// beyond it a join that would make a room gets rate_limited. Joining
	// existing rooms is not limited by it. Default 10; -1: no limit.
	RoomCreateRate float64

	// RateLimit is the sustained number of requests per second a client may
	// make, of every type (messages, joins, nick changes, typing notices,
	// requests that fail); typing notices are also relayed at most once a
	// second. Default 10; -1 turns rate limiting off.
	RateLimit float64

	// RateBurst is how many requests a client may make at once above the
	// sustained rate. Default 20.
	RateBurst int

	// RateHardLimit: a client that keeps sending while limited, past this
	// many refused requests (decaying at RateLimit per second), is closed
	// with 1008. Default 3 x RateBurst.
	RateHardLimit int

	// PresenceInterval is how often joins and leaves are sent to a room's
	// members, coalesced: a storm of joins costs one presence message per
	// member per interval, not one per join. A room that keeps changing
	// gets them less and less often, down to one every 8 intervals, until
	// it is quiet for an interval. Default 250 ms.
	PresenceInterval time.Duration

	// PresenceListMax caps the member list sent to a joiner; the member
	// count is always exact. Default 100.
	PresenceListMax int

	// LargeRoom: above this many members, a room's presence messages carry
	// the member count only, not who joined or left. Default 200.
	LargeRoom int

	// LargeRoomCounts is how often, at most, a large room is told its
	// member count: each count is a write to every member, so during a
	// connect storm into a room of 20,000 a short period would cost more
	// than the connections themselves. Default 5 s, or PresenceInterval if
	// that is longer.
	LargeRoomCounts time.Duration

	// Verifier checks the tokens clients connect with (docs/AUTH.md); nil:
	// no tokens, and a client that sends one is refused.
	Verifier *auth.Verifier

	// Guests says whether clients without a token are admitted. Default
	// GuestsAuto: only when there is no Verifier. Guests cannot change
	// their nick when there is a Verifier (a user's nick is not claimed).
	Guests GuestPolicy

	// PrivateRooms are the rooms only users whose token's "rooms" claim
	// names them, or who were invited (the server API), may join: names,
	// or prefixes ending in '*'. Default none.
	PrivateRooms []string

	// ReadOnlyRooms are the rooms only users whose token's "say" claim
	// names them (and the server API) may say in, as PrivateRooms.
	// Default none.
	ReadOnlyRooms []string

	// MaxRules caps the bans, mutes and invitations the hub holds; past
	// it PutRule refuses a new one with ErrRuleLimit (one put at the same
	// moment on another node is dropped, and counted). Default 100,000.
	MaxRules int

	// Broker carries room messages; nil uses a MemoryBroker (one process).
	Broker Broker

	// Presence keeps who is where; nil uses the Broker, which must then be
	// a PresenceManager (MemoryBroker and natsbroker.Broker are).
	Presence PresenceManager

	// Notifier, if set, is handed the mentions of signed-in users and the
	// DMs to them that none of their connections read within NotifyDelay
	// (notify.Poster posts them to a backend).
	Notifier Notifier

	// NotifyDelay is how long a mention or DM may stay unread before the
	// Notifier hears of it. Default 30 s.
	NotifyDelay time.Duration

	// PresenceGrace: a member whose connection closed is told as left
	// only once it has not come back (the same nick) within this: a
	// reload, or a move to another tab, is not announced. A leave
	// request is told at once. Default 5 s; -1: at once.
	PresenceGrace time.Duration

	// Reads keeps signed-in users' read positions; nil uses the Broker
	// if it is a ReadStore (MemoryBroker and natsbroker.Broker are), else
	// none are kept (a read request gets unavailable).
	Reads ReadStore

	// Logger receives the hub's logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.DefaultRoom == "" {
		d.DefaultRoom = DefaultRoom
	}
	if d.HistorySize == 0 {
		d.HistorySize = DefaultHistorySize
	}
	if d.HistoryTTL == 0 {
		d.HistoryTTL = DefaultHistoryTTL
	}
	if d.ResumeWindow == 0 {
		d.ResumeWindow = DefaultResumeWindow
	}
	if d.HistoryBytes == 0 {
		d.HistoryBytes = DefaultHistoryBytes
	}
	if d.MaxTextLength == 0 {
		d.MaxTextLength = DefaultMaxTextLength
	}
	if d.PresenceGrace == 0 {
		d.PresenceGrace = DefaultPresenceGrace
	}
	if d.NotifyDelay == 0 {
		d.NotifyDelay = DefaultNotifyDelay
	}
	if d.EditWindow == 0 {
		d.EditWindow = DefaultEditWindow
	}
	if d.MaxRooms == 0 {
		d.MaxRooms = DefaultMaxRooms
	}
	if d.MaxRoomsTotal == 0 {
		d.MaxRoomsTotal = DefaultMaxRoomsTotal
	}
	if d.RoomCreateRate == 0 {
		d.RoomCreateRate = DefaultRoomCreateRate
	}
	if d.RateLimit == 0 {
		d.RateLimit = DefaultRateLimit
	}
	if d.RateBurst == 0 {
		d.RateBurst = DefaultRateBurst
	}
	if d.RateHardLimit == 0 {
		d.RateHardLimit = 3 * d.RateBurst
	}
	if d.PresenceInterval == 0 {
		d.PresenceInterval = DefaultPresenceInterval
	}
	if d.PresenceListMax == 0 {
		d.PresenceListMax = DefaultPresenceListMax
	}
	if d.LargeRoom == 0 {
		d.LargeRoom = DefaultLargeRoom
	}
	if d.LargeRoomCounts == 0 {
		d.LargeRoomCounts = max(DefaultLargeRoomCounts, d.PresenceInterval)
	}
	if d.MaxRules == 0 {
		d.MaxRules = DefaultMaxRules
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return d
}

// Validate reports the first invalid field, after defaults are applied.
func (c *Config) Validate() error {
	d := c.withDefaults()
	if err := validRoom(d.DefaultRoom); err != nil {
		return cfgerr.New("DefaultRoom", "chat: DefaultRoom %q: %w", d.DefaultRoom, err)
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"HistorySize", d.HistorySize}, {"HistoryBytes", d.HistoryBytes}, {"MaxTextLength", d.MaxTextLength}, {"MaxRooms", d.MaxRooms}, {"MaxRoomsTotal", d.MaxRoomsTotal},
		{"RateBurst", d.RateBurst}, {"RateHardLimit", d.RateHardLimit},
		{"PresenceListMax", d.PresenceListMax}, {"LargeRoom", d.LargeRoom}, {"MaxRules", d.MaxRules},
	} {
		if f.v < 0 {
			return cfgerr.New(f.name, "chat: %s (%d) must be positive", f.name, f.v)
		}
	}
	if d.Guests < GuestsAuto || d.Guests > GuestsRefused {
		return cfgerr.New("Guests", "chat: Guests (%d) is not a GuestPolicy", d.Guests)
	}
	if d.Guests == GuestsRefused && d.Verifier == nil {
		return cfgerr.New("Guests", "chat: Guests refused with no Verifier: nobody could connect")
	}
	for _, f := range []struct {
		name string
		v    []string
	}{{"PrivateRooms", d.PrivateRooms}, {"ReadOnlyRooms", d.ReadOnlyRooms}} {
		for _, p := range f.v {
			if name, _ := strings.CutSuffix(p, "*"); p != "*" && validRoom(name) != nil && !(strings.HasSuffix(p, "*") && validRoomPrefix(name)) {
				return cfgerr.New(f.name, "chat: %s: %q is not a room name or a prefix ending in *", f.name, p)
			}
		}
	}
	if d.PrivateRooms != nil && auth.Matches(d.PrivateRooms, d.DefaultRoom) {
		return cfgerr.New("PrivateRooms", "chat: PrivateRooms: the default room %q cannot be private (every client joins it)", d.DefaultRoom)
	}
	if d.RoomCreateRate != -1 && d.RoomCreateRate < 1 {
		return cfgerr.New("RoomCreateRate", "chat: RoomCreateRate (%v) must be at least 1, or -1 to turn it off", d.RoomCreateRate)
	}
	if d.RateLimit < 0 && d.RateLimit != -1 {
		return cfgerr.New("RateLimit", "chat: RateLimit (%v) must be positive, or -1 to turn it off", d.RateLimit)
	}
	if d.HistoryMaxAge < 0 || d.HistoryMaxAge > 0 && d.HistoryMaxAge < time.Second {
		return cfgerr.New("HistoryMaxAge", "chat: HistoryMaxAge (%v) must be at least 1s, or 0 for no limit", d.HistoryMaxAge)
	}
	if d.PresenceGrace < 0 && d.PresenceGrace != -1 {
		return cfgerr.New("PresenceGrace", "chat: PresenceGrace (%v) must be positive, or -1 to tell at once", d.PresenceGrace)
	}
	if d.NotifyDelay < 0 {
		return cfgerr.New("NotifyDelay", "chat: NotifyDelay (%v) must be positive", d.NotifyDelay)
	}
	if d.EditWindow < 0 && d.EditWindow != -1 {
		return cfgerr.New("EditWindow", "chat: EditWindow (%v) must be positive, or -1 for as long as the history holds a message", d.EditWindow)
	}
	if d.ResumeWindow < 0 && d.ResumeWindow != -1 {
		return cfgerr.New("ResumeWindow", "chat: ResumeWindow (%v) must be positive, or -1 to turn it off", d.ResumeWindow)
	}
	if d.HistoryBytes < 2*d.MaxTextLength {
		return cfgerr.New("HistoryBytes", "chat: HistoryBytes (%d) must hold at least two messages of MaxTextLength (%d)", d.HistoryBytes, d.MaxTextLength)
	}
	if d.HistoryTTL < 0 {
		return cfgerr.New("HistoryTTL", "chat: HistoryTTL (%v) must be positive", d.HistoryTTL)
	}
	if d.PresenceInterval < 10*time.Millisecond {
		return cfgerr.New("PresenceInterval", "chat: PresenceInterval (%v) must be at least 10ms", d.PresenceInterval)
	}
	if d.LargeRoomCounts < d.PresenceInterval {
		return cfgerr.New("LargeRoomCounts", "chat: LargeRoomCounts (%v) must be at least PresenceInterval (%v)", d.LargeRoomCounts, d.PresenceInterval)
	}
	return nil
}

// ConfigError is the error Validate returns: errors.As finds it, its Field
// names the field at fault, and errors.Is(err, ErrInvalidConfig) holds.
type ConfigError = cfgerr.Error

// ErrInvalidConfig is what every error of Validate Is.
var ErrInvalidConfig = cfgerr.ErrInvalid
