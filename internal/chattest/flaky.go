package chattest

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/chat"
)

// Fault is how a FlakyBroker fails the first publication of each id.
type Fault int

// Faults.
const (
	// Lost: the broker never has it, and says so.
	Lost Fault = iota
	// Stored: the broker has it (its members hear it), but the answer
	// is an error.
	Stored
	// Late: the answer is an error at once, and the broker stores it
	// 300 ms later anyway (a cluster that stored a message after its
	// node gave up waiting): a resend made meanwhile with the same id
	// is stored first, and the late copy is dropped as a repeat.
	Late
)

// ErrAnswerLost is the error a FlakyBroker answers a failed publication
// with.
var ErrAnswerLost = errors.New("chattest: the broker's answer was lost")

// FlakyBroker is a MemoryBroker whose publications fail as a cluster's
// can: the first publication of each message id fails by Fault; later
// ones (the client's resends) go through. Give a hub Broker: the
// FlakyBroker, Presence and Reads: its MemoryBroker.
type FlakyBroker struct {
	*chat.MemoryBroker
	Fault Fault

	// LateDone counts the Late copies published (so a test knows when
	// every late copy has been tried).
	LateDone atomic.Int64

	mu   sync.Mutex
	seen map[string]bool
}

// NewFlakyBroker returns a FlakyBroker failing by f.
func NewFlakyBroker(f Fault) *FlakyBroker {
	return &FlakyBroker{MemoryBroker: chat.NewMemoryBroker(), Fault: f, seen: map[string]bool{}}
}

// Publish implements chat.Broker.
func (b *FlakyBroker) Publish(room string, msg []byte, id string, done func(error)) {
	b.mu.Lock()
	first := id != "" && !b.seen[id]
	if first {
		b.seen[id] = true
	}
	b.mu.Unlock()
	if !first {
		b.MemoryBroker.Publish(room, msg, id, done)
		return
	}
	switch b.Fault {
	case Stored:
		b.MemoryBroker.Publish(room, msg, id, func(error) { done(ErrAnswerLost) })
	case Late:
		done(ErrAnswerLost)
		time.AfterFunc(300*time.Millisecond, func() {
			b.MemoryBroker.Publish(room, msg, id, nil)
			b.LateDone.Add(1)
		})
	default:
		done(ErrAnswerLost)
	}
}
