// Package protocol is Parley's wire protocol (docs/PROTOCOL.md): the
// requests a client sends, the events the server sends, the error codes
// and the close codes, as Go types. Every message is a WebSocket text
// frame holding one JSON object whose "type" names it.
//
// The server (package chat), the load generator and the Go client
// (package client) share these types. Requests are decoded strictly by
// the server: an unknown key, a key given twice or a value of the wrong
// type is refused with CodeBadRequest.
package protocol

import "encoding/json"

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
	Code    Code     `json:"code"`
	Message string   `json:"message"`
	Request *ReqInfo `json:"request,omitempty"`
}

// ReqInfo identifies the request an error answers.
type ReqInfo struct {
	Type string `json:"type,omitempty"`
	ID   string `json:"id,omitempty"`
	Room string `json:"room,omitempty"`
}

// RoomInfo is a room in the directory.
type RoomInfo struct {
	Room    string `json:"room"`
	Count   int    `json:"count"`             // its members, on every node
	Private bool   `json:"private,omitempty"` // listed to those who may join it
}

// RoomList answers a rooms request: rooms by name, after After.
type RoomList struct {
	Type  string     `json:"type"` // "rooms"
	Q     string     `json:"q,omitempty"`
	Rooms []RoomInfo `json:"rooms"`
	// Next, when set, is the After of the next page.
	Next string `json:"next,omitempty"`
}

// SearchResult answers a search: the room's messages holding Q, newest
// last, and where to search on from.
type SearchResult struct {
	Type     string            `json:"type"` // "search"
	Room     string            `json:"room"`
	Q        string            `json:"q"`
	Messages []json.RawMessage `json:"messages"`
	// Before, when set, is the Before of a search for older ones; unset,
	// the history holds no older match.
	Before int64 `json:"before,omitempty"`
}

// Reactions tells a room's members the reactions of messages that
// changed: after Seq entries of the room's log (0 for the counts a joiner
// is sent after its history).
type Reactions struct {
	Type     string         `json:"type"` // "reactions"
	Room     string         `json:"room"`
	Seq      int64          `json:"seq,omitempty"`
	Messages []MessageReact `json:"messages"`
}

// MessageReact is a message's reactions: every emoji on it (none: all
// taken back).
type MessageReact struct {
	Seq       int64          `json:"seq"`
	Reactions []ReactionSeen `json:"reactions"`
}

// ReactionSeen is one emoji on a message: how many reacted with it, and
// the first maxWho of their nicks.
type ReactionSeen struct {
	Emoji string   `json:"emoji"`
	Count int      `json:"count"`
	Who   []string `json:"who"`
}

// Read is a read position pushed to a user's connections: on joining a
// room (the position held), and whenever one of its connections reads
// further.
type Read struct {
	Type  string `json:"type"` // "read"
	Room  string `json:"room"`
	Seq   int64  `json:"seq"`
	Epoch int64  `json:"epoch"`
}

// Seen tells a small room's members that a signed-in member read it up
// to Seq (the page shows "seen by" under the last messages).
type Seen struct {
	Type string `json:"type"` // "seen"
	Room string `json:"room"`
	Nick string `json:"nick"`
	User string `json:"user"`
	Seq  int64  `json:"seq"`
}

// Code is an error's code: stable, for programs (Error.Message is for
// humans and may change).
type Code string

// Error codes.
const (
	CodeBadRequest   Code = "bad_request"  // valid JSON but not a valid request
	CodeUnknownType       = "unknown_type" // a type the server does not know
	CodeBinary            = "binary"       // binary frames are not part of the protocol
	CodeBadRoom           = "bad_room"     // invalid room name
	CodeNotInRoom         = "not_in_room"  // say, typing or leave in a room not joined
	CodeTooManyRooms      = "too_many_rooms"
	CodeRoomLimit         = "room_limit" // the server holds MaxRoomsTotal rooms and none is empty
	CodeBadNick           = "bad_nick"
	CodeNickTaken         = "nick_taken"
	CodeUnknownNick       = "unknown_nick" // dm to a nick nobody has
	CodeEmpty             = "empty"        // blank text
	CodeTooLong           = "too_long"
	CodeBadText           = "bad_text" // text with control characters or bidi embeddings, overrides or isolates
	CodeRateLimited       = "rate_limited"
	CodeNotDelivered      = "not_delivered" // the broker could not take a message (a cluster's NATS away past its publish timeout)
	CodeUnavailable       = "unavailable"   // the cluster's shared state cannot be reached now
	CodeForbidden         = "forbidden"     // a private room without a claim or invitation, or a request the client may not make
	CodeReadOnly          = "read_only"     // a say in a read-only room without a say claim
	CodeMuted             = "muted"         // a say in a room where the user is muted
	CodeBadToken          = "bad_token"     // an auth request whose token is not valid
	CodeNotFound          = "not_found"     // an edit, delete or reply of a message the room's history does not hold (or deleted)
	CodeTooLate           = "too_late"      // an edit or delete past EditWindow
)

// Event types: the "type" of what the server sends. Answers to join,
// leave, dm, auth, typing, nick, read, rooms and search carry their
// request's type.
const (
	EventWelcome   = "welcome"
	EventMessage   = "message"
	EventEdited    = "edited"
	EventDeleted   = "deleted"
	EventReactions = "reactions"
	EventJoin      = "join"
	EventReset     = "reset"
	EventLeave     = "leave"
	EventSeen      = "seen"
	EventRead      = "read"
	EventPresence  = "presence"
	EventHistory   = "history"
	EventDM        = "dm"
	EventAuth      = "auth"
	EventTyping    = "typing"
	EventNick      = "nick"
	EventError     = "error"
	EventRooms     = "rooms"
	EventSearch    = "search"
)

// RequestTypes returns every request type, in the order of docs/PROTOCOL.md.
func RequestTypes() []string {
	return []string{TypeSay, TypeEdit, TypeDelete, TypeRead, TypeReact, TypeRooms, TypeSearch, TypeJoin,
		TypeLeave, TypeNick, TypeDM, TypeAuth, TypeHistory, TypeTyping}
}

// EventTypes returns every event type.
func EventTypes() []string {
	return []string{EventWelcome, EventMessage, EventEdited, EventDeleted, EventReactions, EventJoin, EventReset,
		EventLeave, EventSeen, EventRead, EventPresence, EventHistory, EventDM, EventAuth, EventTyping, EventNick,
		EventError, EventRooms, EventSearch}
}

// Codes returns every error code.
func Codes() []Code {
	return []Code{CodeBadRequest, CodeUnknownType, CodeBinary, CodeBadRoom, CodeNotInRoom, CodeTooManyRooms, CodeRoomLimit,
		CodeBadNick, CodeNickTaken, CodeUnknownNick, CodeEmpty, CodeTooLong, CodeBadText, CodeRateLimited, CodeNotDelivered,
		CodeUnavailable, CodeForbidden, CodeReadOnly, CodeMuted, CodeBadToken, CodeNotFound, CodeTooLate}
}

// CloseCode is a WebSocket close code (RFC 6455 7.4).
type CloseCode int

// Close codes the server closes a client with: RFC 6455's, and Parley's
// own in 4000-4999 (the application's range).
const (
	CloseGoingAway       CloseCode = 1001 // ReasonShutdown: reconnect with backoff and resume
	CloseProtocolError   CloseCode = 1002
	CloseInvalidPayload  CloseCode = 1007 // invalid UTF-8 in a text frame
	ClosePolicyViolation CloseCode = 1008 // ReasonRateLimit, ReasonSlowConsumer, ReasonHeartbeat, ReasonInflateRate
	CloseTooBig          CloseCode = 1009 // a message above the server's maximum size
	CloseTryAgainLater   CloseCode = 1013 // ReasonServerFull
	// CloseDisconnected: a backend disconnected the client (the server
	// API's default code; a backend may give any code of 4000-4999).
	CloseDisconnected CloseCode = 4000
	// CloseTokenExpired: the client's token expired and was not
	// refreshed (ReasonTokenExpired). Reconnect with a fresh one.
	CloseTokenExpired CloseCode = 4001
	// CloseBanned: the user or its address was banned (ReasonBanned).
	// Do not reconnect.
	CloseBanned CloseCode = 4003
)

// Close reasons the server gives with its close codes.
const (
	ReasonShutdown     = "server shutting down"
	ReasonRateLimit    = "rate limit exceeded"
	ReasonSlowConsumer = "slow consumer"
	ReasonHeartbeat    = "heartbeat timeout"
	ReasonInflateRate  = "inflated byte rate limit exceeded"
	ReasonServerFull   = "the server is full: a connection that sent nothing made room"
	ReasonTokenExpired = "token expired"
	ReasonBanned       = "banned"
)
