package chat

import (
	"errors"
	"sync"
)

// MemoryBroker is the Broker of a single process: Publish hands the
// publication straight to the handler, on the caller's goroutine, when the
// room is subscribed. It is as fast as a direct call plus a map lookup.
type MemoryBroker struct {
	mu   sync.RWMutex
	h    BrokerHandler
	subs map[string]bool
}

var _ Broker = (*MemoryBroker)(nil)

// ErrBrokerNotRunning is returned by a broker used before Run or after
// Close.
var ErrBrokerNotRunning = errors.New("chat: broker not running")

// NewMemoryBroker returns a MemoryBroker.
func NewMemoryBroker() *MemoryBroker { return &MemoryBroker{subs: make(map[string]bool)} }

// Run implements Broker.
func (b *MemoryBroker) Run(h BrokerHandler) error {
	b.mu.Lock()
	b.h = h
	b.mu.Unlock()
	return nil
}

// Publish implements Broker.
func (b *MemoryBroker) Publish(room string, data []byte) error {
	b.mu.RLock()
	h, sub := b.h, b.subs[room]
	b.mu.RUnlock()
	if h == nil {
		return ErrBrokerNotRunning
	}
	if sub {
		h.HandlePublication(room, data)
	}
	return nil
}

// Subscribe implements Broker.
func (b *MemoryBroker) Subscribe(room string) error {
	b.mu.Lock()
	b.subs[room] = true
	b.mu.Unlock()
	return nil
}

// Unsubscribe implements Broker.
func (b *MemoryBroker) Unsubscribe(room string) error {
	b.mu.Lock()
	delete(b.subs, room)
	b.mu.Unlock()
	return nil
}

// Close implements Broker.
func (b *MemoryBroker) Close() error {
	b.mu.Lock()
	b.h = nil
	b.mu.Unlock()
	return nil
}
