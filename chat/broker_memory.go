package chat

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryBroker is the Broker of a single process: Publish numbers the
// message and hands it to the handler on the caller's goroutine. It is as
// fast as a direct call plus a map lookup. A room's log lives while the
// room is subscribed; the hub keeps the history itself.
type MemoryBroker struct {
	mu        sync.RWMutex
	h         BrokerHandler
	rooms     map[string]*memoryRoom
	nicks     map[string]string
	lastEpoch int64
	reads     memoryReads
}

type memoryRoom struct {
	mu    sync.Mutex // held while a message is numbered and handled: one order
	epoch int64
	seq   atomic.Int64 // read by Subscribe without mu: the handler may hold a hub lock Subscribe's caller waits on

	// The last DedupeWindow message ids, made on the first message with
	// one.
	ids  map[string]struct{}
	ring []string
	at   int
}

// seen reports whether id is one of the room's recent ids, and remembers
// it if not. Callers hold r.mu.
func (r *memoryRoom) seen(id string) bool {
	if _, ok := r.ids[id]; ok {
		return true
	}
	if r.ids == nil {
		r.ids, r.ring = make(map[string]struct{}, DedupeWindow), make([]string, DedupeWindow)
	}
	delete(r.ids, r.ring[r.at])
	r.ring[r.at] = id
	r.at = (r.at + 1) % len(r.ring)
	r.ids[id] = struct{}{}
	return false
}

var _ Broker = (*MemoryBroker)(nil)

// NewMemoryBroker returns a MemoryBroker.
func NewMemoryBroker() *MemoryBroker {
	return &MemoryBroker{rooms: make(map[string]*memoryRoom), nicks: make(map[string]string)}
}

// Run implements Broker.
func (b *MemoryBroker) Run(h BrokerHandler) error {
	b.mu.Lock()
	b.h = h
	b.mu.Unlock()
	return nil
}

// Node implements Broker: a MemoryBroker is alone.
func (b *MemoryBroker) Node() string { return "" }

// Publish implements Broker.
func (b *MemoryBroker) Publish(room string, msg []byte, id string, done func(error)) {
	b.mu.RLock()
	h, r := b.h, b.rooms[room]
	b.mu.RUnlock()
	var err error
	switch {
	case h == nil:
		err = ErrBrokerNotRunning
	case r != nil:
		r.mu.Lock()
		if id == "" || !r.seen(id) {
			h.HandleMessage(room, r.seq.Add(1), msg)
		}
		r.mu.Unlock()
	}
	if done != nil {
		done(err)
	}
}

// Subscribe implements Broker. A room subscribed anew starts a new epoch.
func (b *MemoryBroker) Subscribe(_ context.Context, room string) (RoomState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.rooms[room]
	if r == nil {
		b.lastEpoch = max(time.Now().UnixMilli(), b.lastEpoch+1)
		r = &memoryRoom{epoch: b.lastEpoch}
		b.rooms[room] = r
	}
	return RoomState{Epoch: r.epoch, Seq: r.seq.Load()}, nil
}

// Unsubscribe implements Broker: the room's numbering ends with it.
func (b *MemoryBroker) Unsubscribe(room string) error {
	b.mu.Lock()
	delete(b.rooms, room)
	b.mu.Unlock()
	return nil
}

// PublishPresence implements Broker: there are no other hubs to tell.
func (b *MemoryBroker) PublishPresence(string, []byte) error { return nil }

// SendDirect implements Broker: a MemoryBroker has no other node.
func (b *MemoryBroker) SendDirect(node string, _ []byte, done func(error)) {
	done(fmt.Errorf("%w: %q", ErrNoNode, node))
}

// ClaimNick implements Broker.
func (b *MemoryBroker) ClaimNick(_ context.Context, key, owner string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if o, ok := b.nicks[key]; ok && o != owner {
		return ErrNickClaimed
	}
	b.nicks[key] = owner
	return nil
}

// ReleaseNick implements Broker.
func (b *MemoryBroker) ReleaseNick(_ context.Context, key, owner string) error {
	b.mu.Lock()
	if b.nicks[key] == owner {
		delete(b.nicks, key)
	}
	b.mu.Unlock()
	return nil
}

// LookupNick implements Broker.
func (b *MemoryBroker) LookupNick(_ context.Context, key string) (string, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if o, ok := b.nicks[key]; ok {
		return o, nil
	}
	return "", ErrNickNotFound
}

// PutRule implements Broker: the rule is handed to the hub at once.
func (b *MemoryBroker) PutRule(_ context.Context, r Rule) error {
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	if h == nil {
		return ErrBrokerNotRunning
	}
	h.HandleRule(r, false)
	return nil
}

// DeleteRule implements Broker.
func (b *MemoryBroker) DeleteRule(_ context.Context, r Rule) error {
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	if h == nil {
		return ErrBrokerNotRunning
	}
	h.HandleRule(r, true)
	return nil
}

// Broadcast implements Broker: data goes to the hub at once.
func (b *MemoryBroker) Broadcast(data []byte) error {
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	if h == nil {
		return ErrBrokerNotRunning
	}
	h.HandleControl(data)
	return nil
}

// Nodes implements Broker: the hub alone.
func (b *MemoryBroker) Nodes() []NodeInfo {
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	if h == nil {
		return nil
	}
	n := h.NodeLoad()
	n.Node = LocalNode
	return []NodeInfo{n}
}

// LocalNode is the name of a lone server's node, as the server API and
// the load reports show it (a cluster's nodes have their own names).
const LocalNode = "local"

// Close implements Broker.
func (b *MemoryBroker) Close(context.Context) error {
	b.mu.Lock()
	b.h = nil
	b.mu.Unlock()
	return nil
}
