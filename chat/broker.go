package chat

import (
	"context"
	"errors"
)

// Broker connects the hubs of a cluster: it numbers each room's messages
// and carries them, with direct messages, broadcasts and access rules, to
// every hub that has members in the room. Who is where (room members on
// other nodes, nicks, live nodes) is the PresenceManager's, as
// centrifugal/centrifuge keeps its PresenceManager apart from its Broker.
// MemoryBroker is the broker of a single process; natsbroker.Broker shares
// rooms between nodes through NATS. Both are PresenceManagers too.
//
// Contract:
//   - Order comes from the broker: it gives each room message the room's
//     next sequence number, and every subscribed hub receives a room's
//     messages once each, in sequence order (a broker that loses one, on a
//     reconnect say, fetches it again or reports a reset).
//   - A room's numbers count from 1 within an epoch (RoomState.Epoch);
//     a broker that loses a room's log starts a new epoch and says so with
//     HandleReset.
//   - The publishing hub receives its own messages.
//   - Handler calls for one room are not concurrent with each other.
//
// Concurrency: every method may be called from any goroutine, at the
// same time as any other (the hub calls them from its clients'
// callbacks, its timers and its backend callers), except Run, called
// once before all others, and Close, after which no other is called.
// Publish, SendDirect, Broadcast and PublishPresence do not block for
// long: a hub calls them on the engine's goroutines, and they report
// their outcome through done (on any goroutine) or not at all. The
// methods that take a context (Subscribe, PutRule, DeleteRule, Close, and
// the PresenceManager's nick calls) may wait on the network: they return
// ctx's error once ctx ends, having given up or undone what they began
// (a Subscribe given up leaves the room unsubscribed). A broker may call
// its handler from inside Publish, PutRule and DeleteRule (MemoryBroker
// delivers at once, on the caller's goroutine) as well as from its own
// goroutines, so the hub holds none of the locks its handlers take while
// it calls those.
type Broker interface {
	// Run starts delivering to h. The hub calls it once, before any other
	// method.
	Run(h BrokerHandler) error

	// Node names this hub among the cluster's live nodes; "" when it is
	// alone (MemoryBroker).
	Node() string

	// Subscribe makes this hub receive room's messages and presence news,
	// and returns the room's state: every message after State.Seq reaches
	// HandleMessage. Subscribing twice is the same as once.
	Subscribe(ctx context.Context, room string) (RoomState, error)

	// Unsubscribe stops room's deliveries to this hub.
	Unsubscribe(room string) error

	// Publish appends msg, a JSON object (a Message without type, room and
	// seq), to room's log. id, when not empty, names the message for
	// deduplication: a publication to room with the id of one of its
	// recent messages (at least the last DedupeWindow) is dropped, so a
	// client that resends after a reconnect is not heard twice. done, when
	// not nil, is called once, perhaps on another goroutine, with nil once
	// the broker has the message (or knew it already) or with the reason
	// it could not take it. Publish does not block for long: a hub calls
	// it on the engine's goroutines.
	Publish(room string, msg []byte, id string, done func(error))

	// SendDirect sends data to the hub named node (HandleDirect there)
	// and calls done once, perhaps on another goroutine, with that hub's
	// answer: nil when the recipient had it, an error wrapping
	// ErrNickNotFound when nobody there held the nick, or why it could not
	// be sent (ErrNoNode for a node not in the cluster, a timeout).
	// SendDirect does not block for long.
	SendDirect(node string, data []byte, done func(error))

	// PutRule puts an access rule in force in the whole cluster: every
	// hub's HandleRule receives it, this one's included, and hubs that
	// start later receive the rules in force when they Run. A rule with
	// the key of another replaces it.
	PutRule(ctx context.Context, r Rule) error

	// DeleteRule ends the rule with r's key everywhere (HandleRule with
	// deleted set).
	DeleteRule(ctx context.Context, r Rule) error

	// Broadcast sends data to every hub of the cluster, this one included
	// (HandleControl).
	Broadcast(data []byte) error

	// Close stops deliveries and releases the broker's resources, telling
	// the cluster this node leaves if it can within ctx.
	Close(ctx context.Context) error
}

// PresenceManager keeps who is where across the cluster: each room's
// members on the other nodes (news the hubs exchange), the directory of
// nicks, and the live nodes. Its news reaches the hub as PresenceHandler
// calls, through the handler the Broker was Run with: the presence of a
// room travels while the hub subscribes to the room.
type PresenceManager interface {
	// PublishPresence sends this hub's presence news for room to the other
	// hubs subscribed to it (not to this one).
	PublishPresence(room string, data []byte) error

	// ClaimNick reserves key, a lower-cased nick, for owner across the
	// cluster; it returns ErrNickClaimed when a live owner holds it.
	// Claiming a key one holds already succeeds.
	ClaimNick(ctx context.Context, key, owner string) error

	// ReleaseNick gives key up if owner holds it.
	ReleaseNick(ctx context.Context, key, owner string) error

	// LookupNick returns key's owner, or ErrNickNotFound.
	LookupNick(ctx context.Context, key string) (owner string, err error)

	// Nodes describes the cluster's live nodes, this one first, as they
	// last told (NodeLoad).
	Nodes() []NodeInfo
}

// DedupeWindow is the least a broker remembers the ids of a room's
// messages for deduplication: MemoryBroker keeps the last DedupeWindow ids
// of each room, natsbroker the ids of the last two minutes (JetStream's
// duplicate window).
const DedupeWindow = 256

// NodeInfo is a node's load as it tells the cluster.
type NodeInfo struct {
	Node    string `json:"node"`
	Clients int    `json:"clients"`
	Users   int    `json:"users"`
	Rooms   int    `json:"rooms"`
}

// RoomState is a room's log as a hub finds it on Subscribe.
type RoomState struct {
	// Epoch is when the room's log began, Unix milliseconds. Sequence
	// numbers are comparable within one epoch only.
	Epoch int64
	// Seq is the latest message's sequence number (0: none yet).
	Seq int64
	// Messages are the latest stored messages as published, oldest first;
	// the last one has sequence number Seq.
	Messages []StoredMessage
}

// StoredMessage is one message of a room's log.
type StoredMessage struct {
	Seq  int64
	Data []byte // as given to Publish
	Time int64  // when the broker stored it, Unix ns (0: not known)
}

// BrokerHandler receives what the broker delivers; the Hub implements it.
type BrokerHandler interface {
	PresenceHandler
	// HandleMessage delivers room's message number seq, as published.
	HandleMessage(room string, seq int64, msg []byte)
	// HandleReset tells that room's log started again: st is its new state.
	HandleReset(room string, st RoomState)
	// HandleDirect delivers data sent to this node with SendDirect; its
	// error (ErrNickNotFound: the recipient is not here) is the sender's
	// answer.
	HandleDirect(data []byte) error
	// HandleRule delivers an access rule put in force (or, deleted, ended).
	HandleRule(r Rule, deleted bool)
	// HandleControl delivers data sent with Broadcast.
	HandleControl(data []byte)
	// NodeLoad reports this hub's load, for the other nodes (Node is the
	// broker's to fill in). It may be called from any goroutine.
	NodeLoad() NodeInfo
}

// PresenceHandler receives the PresenceManager's news.
type PresenceHandler interface {
	// HandlePresence delivers another node's presence news for room.
	HandlePresence(room, node string, data []byte)
	// HandleNodeGone tells that node left the cluster or stopped
	// answering: whatever it held (members, nicks) is gone.
	HandleNodeGone(node string)
}

// Broker errors.
var (
	// ErrBrokerNotRunning is returned by a broker used before Run or
	// after Close.
	ErrBrokerNotRunning = errors.New("chat: broker not running")
	// ErrNickClaimed is returned by ClaimNick for a nick someone else holds.
	ErrNickClaimed = errors.New("chat: nick taken")
	// ErrNickNotFound is returned by LookupNick for a nick nobody holds.
	ErrNickNotFound = errors.New("chat: unknown nick")
	// ErrNoNode is returned by SendDirect for a node not in the cluster.
	ErrNoNode = errors.New("chat: no such node")
	// ErrStoreFull is returned by Subscribe for a room whose log the
	// broker's store has no room for: a joiner gets room_limit.
	ErrStoreFull = errors.New("chat: the store holds as many rooms as it may")
)
