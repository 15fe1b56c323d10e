package chat

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/parleyhq/parley/internal/strictjson"
)

// Request is a client's message. Type selects the action; the other fields
// are used by the types that need them (docs/PROTOCOL.md). ID, if set, is
// echoed in an error answering this request.
type Request struct {
	Type   string `json:"type"`
	ID     string `json:"id,omitempty"`
	Room   string `json:"room,omitempty"`
	Text   string `json:"text,omitempty"`
	Nick   string `json:"nick,omitempty"`
	To     string `json:"to,omitempty"`     // dm: the recipient's nick (a guest's)
	User   string `json:"user,omitempty"`   // dm: the recipient's user id (every connection of a signed-in user)
	Token  string `json:"token,omitempty"`  // auth: a fresh token for the same user
	Since  *int64 `json:"since,omitempty"`  // join: replay messages after this sequence number
	Epoch  int64  `json:"epoch,omitempty"`  // join: the epoch Since counts in (0: the room's current one)
	Before int64  `json:"before,omitempty"` // history: messages before this sequence number (0: the latest)
	Limit  int    `json:"limit,omitempty"`  // history: how many (at most HistorySize)
	Seq    int64  `json:"seq,omitempty"`    // edit, delete: the message's sequence number; read: the last one read
	Reply  int64  `json:"reply,omitempty"`  // say: the sequence number of the room's message it answers
	DM     bool   `json:"dm,omitempty"`     // read: every DM so far is read (no notification of them)
	Q      string `json:"q,omitempty"`      // rooms: what names hold; search: what texts hold
	After  string `json:"after,omitempty"`  // rooms: list the names after this one (the last page's next)
	Emoji  string `json:"emoji,omitempty"`  // react: the emoji to toggle on message Seq
}

// decodeStrict decodes the JSON object data into v strictly
// (strictjson.Decode): a request never gets a second meaning.
func decodeStrict(data []byte, v any) error { return strictjson.Decode(data, v) }

// Request types.
const (
	TypeJoin    = "join"
	TypeLeave   = "leave"
	TypeSay     = "say"
	TypeNick    = "nick"
	TypeDM      = "dm"
	TypeHistory = "history"
	TypeTyping  = "typing"
	TypeAuth    = "auth"
	TypeEdit    = "edit"
	TypeDelete  = "delete"
	TypeRead    = "read"
	TypeReact   = "react"
	TypeRooms   = "rooms"
	TypeSearch  = "search"
)

// Message is a room message as members receive it and history keeps it.
type Message struct {
	Type string `json:"type"` // "message"
	Room string `json:"room"`
	Seq  int64  `json:"seq"`
	From string `json:"from"`
	// User is the sender's user id when it signed in with a token:
	// unlike From, it cannot be borrowed.
	User   string `json:"user,omitempty"`
	System bool   `json:"system,omitempty"` // sent by the server's backend (the server API), not a client
	Text   string `json:"text"`
	TS     int64  `json:"ts"`           // server time, Unix milliseconds
	ID     string `json:"id,omitempty"` // the say's id, if it had one
	// SID is a guest sender's id: the same on all its messages while it
	// stays connected, another after it reconnects. With User, it says
	// whose a message is (a nick can pass to someone else).
	SID   string    `json:"sid,omitempty"`
	Reply *ReplyRef `json:"reply,omitempty"` // the message this one answers
	// Edited is when the text was last edited (Unix ms); Deleted when the
	// message was deleted (its text is then empty).
	Edited  int64 `json:"edited,omitempty"`
	Deleted int64 `json:"deleted,omitempty"`
}

// ReplyRef is the message a reply answers: its sequence number, its
// sender and the start of its text (emptied if it is deleted).
type ReplyRef struct {
	Seq     int64  `json:"seq"`
	From    string `json:"from"`
	User    string `json:"user,omitempty"`
	Excerpt string `json:"excerpt"`
}

// Edit is an edited or deleted event: the room's log entry Seq changed
// message Edits (Text is its new text) or deleted message Deletes.
// History carries these too, after the message (which it holds as
// changed).
type Edit struct {
	Type    string `json:"type"` // "edited" or "deleted"
	Room    string `json:"room"`
	Seq     int64  `json:"seq"`
	Edits   int64  `json:"edits,omitempty"`
	Deletes int64  `json:"deletes,omitempty"`
	From    string `json:"from"`
	User    string `json:"user,omitempty"`
	SID     string `json:"sid,omitempty"`
	System  bool   `json:"system,omitempty"`
	Mod     bool   `json:"mod,omitempty"` // deleted by a moderator, not its sender
	Text    string `json:"text"`
	TS      int64  `json:"ts"`
}

// Welcome is the first message a client receives.
type Welcome struct {
	Type string `json:"type"` // "welcome"
	ID   uint64 `json:"id"`
	Nick string `json:"nick"`
	// User is the client's user id if it signed in with a token; Expires
	// when that token expires (Unix ms): before then the client sends a
	// fresh one ({"type":"auth"}), or is closed with 4001.
	User    string `json:"user,omitempty"`
	Expires int64  `json:"expires,omitempty"`
	// SID is a guest's sender id, as its room messages carry it: its own
	// are those with this SID (a user's, those with its User).
	SID  string `json:"sid,omitempty"`
	Room string `json:"room"` // the room joined on connect (?room=, or the default room)
	// Epoch identifies this server's life (its start, Unix ms). Rooms
	// have epochs of their own (Joined.Epoch).
	Epoch  int64  `json:"epoch"`
	Limits Limits `json:"limits"`
}

// Limits tells a client the rules it is held to.
type Limits struct {
	MaxTextLength int     `json:"max_text_length"`
	MaxRooms      int     `json:"max_rooms"`
	MaxNickLength int     `json:"max_nick_length"`
	RatePerSecond float64 `json:"rate_per_second"` // -1: no limit
	RateBurst     int     `json:"rate_burst"`
	HistorySize   int     `json:"history_size"`
	EditWindow    int64   `json:"edit_window"` // ms a message may be edited or deleted after it is said; -1: while the history holds it
}

// Joined answers a join: the room's state for the joiner.
type Joined struct {
	Type      string   `json:"type"` // "join"
	Room      string   `json:"room"`
	Nick      string   `json:"nick"`
	Count     int      `json:"count"`
	Members   []string `json:"members"`             // at most PresenceListMax, sorted; above LargeRoom a sample of 20, refreshed every LargeRoomCounts
	Truncated bool     `json:"truncated,omitempty"` // Members is not everyone
	Seq       int64    `json:"seq"`                 // the room's latest sequence number
	Epoch     int64    `json:"epoch"`               // when the room's log began, Unix ms: Seq counts within it
}

// joinedLarge is Joined with the member sample already encoded.
type joinedLarge struct {
	Type      string          `json:"type"`
	Room      string          `json:"room"`
	Nick      string          `json:"nick"`
	Count     int             `json:"count"`
	Members   json.RawMessage `json:"members"`
	Truncated bool            `json:"truncated"`
	Seq       int64           `json:"seq"`
	Epoch     int64           `json:"epoch"`
}

// Reset tells a room's members that its log began again (the cluster's
// broker lost it): sequence numbers count on from Seq in the new Epoch.
type Reset struct {
	Type  string `json:"type"` // "reset"
	Room  string `json:"room"`
	Epoch int64  `json:"epoch"`
	Seq   int64  `json:"seq"`
}

// Left answers a leave.
type Left struct {
	Type string `json:"type"` // "leave"
	Room string `json:"room"`
}

// Presence tells a room's members who came and went since the last one.
// Rooms above LargeRoom members get the count only.
type Presence struct {
	Type    string    `json:"type"` // "presence"
	Room    string    `json:"room"`
	Count   int       `json:"count"`
	Joined  []string  `json:"joined,omitempty"`
	Left    []string  `json:"left,omitempty"`
	Renamed []Renamed `json:"renamed,omitempty"`
}

// Renamed is a nick change seen in a room.
type Renamed struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// History carries stored messages, oldest first.
type History struct {
	Type     string            `json:"type"` // "history"
	Room     string            `json:"room"`
	Messages []json.RawMessage `json:"messages"`
	// Gap is set when messages the client asked for are no longer kept.
	Gap bool `json:"gap,omitempty"`
}

// DM is a direct message; its sender gets a copy. A DM to a user reaches
// all its connections, and the sender's other connections get the copy.
type DM struct {
	Type     string `json:"type"` // "dm"
	From     string `json:"from"`
	FromUser string `json:"from_user,omitempty"` // the sender's user id, if signed in
	To       string `json:"to"`
	ToUser   string `json:"to_user,omitempty"` // the recipient's user id, for a DM to a user
	Text     string `json:"text"`
	TS       int64  `json:"ts"`
}

// Authed answers an auth request: the fresh token is in force.
type Authed struct {
	Type    string `json:"type"` // "auth"
	User    string `json:"user"`
	Expires int64  `json:"expires"` // Unix ms
}

// Typing tells a room someone is typing.
type Typing struct {
	Type string `json:"type"`           // "typing"
	Room string `json:"room,omitempty"` // "" for a DM: Nick is typing to the recipient
	Nick string `json:"nick"`
}

// NickChanged answers a nick request.
type NickChanged struct {
	Type string `json:"type"` // "nick"
	Nick string `json:"nick"`
	Old  string `json:"old"`
}

// Error answers a request that failed.
type Error struct {
	Type    string   `json:"type"` // "error"
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Request *ReqInfo `json:"request,omitempty"`
}

// ReqInfo identifies the request an error answers.
type ReqInfo struct {
	Type string `json:"type,omitempty"`
	ID   string `json:"id,omitempty"`
	Room string `json:"room,omitempty"`
}

// Error codes.
const (
	ErrBadRequest   = "bad_request"  // valid JSON but not a valid request
	ErrUnknownType  = "unknown_type" // a type the server does not know
	ErrBinary       = "binary"       // binary frames are not part of the protocol
	ErrBadRoom      = "bad_room"     // invalid room name
	ErrNotInRoom    = "not_in_room"  // say, typing or leave in a room not joined
	ErrTooManyRooms = "too_many_rooms"
	ErrRoomLimit    = "room_limit" // the server holds MaxRoomsTotal rooms and none is empty
	ErrBadNick      = "bad_nick"
	ErrNickTaken    = "nick_taken"
	ErrUnknownNick  = "unknown_nick" // dm to a nick nobody has
	ErrEmpty        = "empty"        // blank text
	ErrTooLong      = "too_long"
	ErrBadText      = "bad_text" // text with control characters or bidi embeddings, overrides or isolates
	ErrRateLimited  = "rate_limited"
	ErrNotDelivered = "not_delivered" // the broker could not take a message (a cluster's NATS away past its publish timeout)
	ErrUnavailable  = "unavailable"   // the cluster's shared state cannot be reached now
	ErrForbidden    = "forbidden"     // a private room without a claim or invitation, or a request the client may not make
	ErrReadOnly     = "read_only"     // a say in a read-only room without a say claim
	ErrMuted        = "muted"         // a say in a room where the user is muted
	ErrBadToken     = "bad_token"     // an auth request whose token is not valid
	ErrNotFound     = "not_found"     // an edit, delete or reply of a message the room's history does not hold (or deleted)
	ErrTooLate      = "too_late"      // an edit or delete past EditWindow
)

// errorCodes lists every error code, so that counters exist from the start.
var errorCodes = []string{ErrBadRequest, ErrUnknownType, ErrBinary, ErrBadRoom, ErrNotInRoom, ErrTooManyRooms, ErrRoomLimit,
	ErrBadNick, ErrNickTaken, ErrUnknownNick, ErrEmpty, ErrTooLong, ErrBadText, ErrRateLimited, ErrNotDelivered, ErrUnavailable,
	ErrForbidden, ErrReadOnly, ErrMuted, ErrBadToken, ErrNotFound, ErrTooLate}

// badTextRune reports the characters a message's text may not hold:
// control characters other than tab and newline, and the bidi
// embeddings, overrides and isolates that reorder what follows them
// (U+202A-U+202E, U+2066-U+2069: "Trojan Source", a right-to-left
// override showing "txt.exe" as "exe.txt"). The marks (LRM, RLM, ALM)
// stay: they reorder nothing, and mixed text needs them.
func badTextRune(r rune) bool {
	switch {
	case r == '\t' || r == '\n':
		return false
	case r < 0x20 || (r >= 0x7f && r <= 0x9f):
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// MaxNickLength and MaxRoomLength cap names, in characters.
const (
	MaxNickLength = 24
	MaxRoomLength = 32
)

// validNick checks a nickname: 1 to 24 letters, digits, '_', '-' or '.',
// starting with a letter or digit.
func validNick(s string) error {
	return validName(s, MaxNickLength, "_-.")
}

// validRoom checks a room name: 1 to 32 letters, digits, '_' or '-',
// starting with a letter or digit.
func validRoom(s string) error {
	return validName(s, MaxRoomLength, "_-")
}

func validName(s string, maxLen int, punct string) error {
	n := utf8.RuneCountInString(s)
	switch {
	case n == 0:
		return fmt.Errorf("must not be empty")
	case n > maxLen:
		return fmt.Errorf("must be at most %d characters", maxLen)
	}
	for i, r := range s {
		ok := unicode.IsLetter(r) || unicode.IsDigit(r) || (i > 0 && strings.ContainsRune(punct, r))
		if !ok {
			return fmt.Errorf("may hold letters, digits and %q only, starting with a letter or digit", punct)
		}
	}
	return nil
}

// validRoomPrefix checks the part before '*' of a room pattern: what a
// room name may start with.
func validRoomPrefix(s string) bool {
	return s != "" && validRoom(s) == nil || s != "" && validRoom(s+"x") == nil
}
