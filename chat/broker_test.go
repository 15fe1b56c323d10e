package chat_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/chat/brokertest"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

func TestMemoryBroker(t *testing.T) {
	brokertest.Single(t, chat.NewMemoryBroker())

	b := chat.NewMemoryBroker()
	var got error
	b.Publish("a", []byte(`{}`), "", func(err error) { got = err })
	if !errors.Is(got, chat.ErrBrokerNotRunning) {
		t.Fatalf("Publish before Run: %v", got)
	}
	// A room subscribed anew after it was given up starts a new epoch.
	_ = b.Run(brokertest.NewHandler())
	st1, _ := b.Subscribe(context.Background(), "a")
	_ = b.Unsubscribe("a")
	st2, _ := b.Subscribe(context.Background(), "a")
	if st2.Epoch <= st1.Epoch {
		t.Fatalf("epochs %d then %d: a new room must start a new epoch", st1.Epoch, st2.Epoch)
	}
}

// BenchmarkMemoryBrokerPublish: the in-memory path is a map lookup under a
// read lock, an atomic add and a direct call.
func BenchmarkMemoryBrokerPublish(b *testing.B) {
	br := chat.NewMemoryBroker()
	_ = br.Run(nopHandler{})
	_, _ = br.Subscribe(context.Background(), "lobby")
	data := []byte(`{"from":"a","text":"hi","ts":1}`)
	b.ReportAllocs()
	for b.Loop() {
		br.Publish("lobby", data, "", nil)
	}
}

type nopHandler struct{}

func (nopHandler) HandleMessage(string, int64, []byte)   {}
func (nopHandler) HandleReset(string, chat.RoomState)    {}
func (nopHandler) HandlePresence(string, string, []byte) {}
func (nopHandler) HandleDirect([]byte) error             { return nil }
func (nopHandler) HandleNodeGone(string)                 {}
func (nopHandler) HandleRule(chat.Rule, bool)            {}
func (nopHandler) HandleControl([]byte)                  {}
func (nopHandler) NodeLoad() chat.NodeInfo               { return chat.NodeInfo{} }

// onlyBroker is a Broker that is no PresenceManager.
type onlyBroker struct{ chat.Broker }

// TestPresenceManagerSeam: presence goes to Config.Presence when given;
// without it the Broker must be a PresenceManager, else New names the
// field.
func TestPresenceManagerSeam(t *testing.T) {
	_, err := chat.New(chat.Config{Broker: onlyBroker{chat.NewMemoryBroker()}})
	var ce *chat.ConfigError
	if !errors.As(err, &ce) || ce.Field != "Presence" {
		t.Fatalf("a Broker that is no PresenceManager, no Presence: %v", err)
	}
	pm := &countingPresence{MemoryBroker: chat.NewMemoryBroker()}
	_, _, url := startChat(t, chat.Config{Broker: onlyBroker{chat.NewMemoryBroker()}, Presence: pm}, engine.Config{})
	c := connect(t, url)
	c.Send(protocol.Request{Type: protocol.TypeNick, Nick: "alice"})
	c.Expect("nick")
	if pm.claims.Load() == 0 {
		t.Fatal("the nick was not claimed through Config.Presence")
	}
}

// countingPresence is a PresenceManager that counts nick claims.
type countingPresence struct {
	*chat.MemoryBroker
	claims atomic.Int64
}

func (p *countingPresence) ClaimNick(ctx context.Context, key, owner string) error {
	p.claims.Add(1)
	return p.MemoryBroker.ClaimNick(ctx, key, owner)
}

// downBroker is a MemoryBroker whose rooms named "down" cannot be opened,
// as a cluster's when NATS cannot make the room's stream.
type downBroker struct{ *chat.MemoryBroker }

func (b downBroker) Subscribe(ctx context.Context, room string) (chat.RoomState, error) {
	if room == "down" {
		return chat.RoomState{}, errors.New("no suitable peers for placement")
	}
	return b.MemoryBroker.Subscribe(ctx, room)
}

// TestJoinUnavailable: a room the broker cannot open now is refused with
// unavailable, which a client may try again, not with bad_room, which
// says the name is wrong.
func TestJoinUnavailable(t *testing.T) {
	_, _, url := startChat(t, chat.Config{Broker: downBroker{chat.NewMemoryBroker()}}, engine.Config{})
	c := connect(t, url)
	c.Send(protocol.Request{Type: protocol.TypeJoin, Room: "down", ID: "j1"})
	if e := c.ExpectError(protocol.CodeUnavailable); e.Request == nil || e.Request.ID != "j1" {
		t.Fatalf("the error does not name its request: %+v", e)
	}
}

// stuckBroker is a MemoryBroker whose room "stuck" cannot be opened until
// the caller gives up, and which never answers publications to "silent":
// a NATS that does not answer.
type stuckBroker struct{ *chat.MemoryBroker }

func (b stuckBroker) Subscribe(ctx context.Context, room string) (chat.RoomState, error) {
	if room == "stuck" {
		<-ctx.Done()
		return chat.RoomState{}, ctx.Err()
	}
	return b.MemoryBroker.Subscribe(ctx, room)
}

func (b stuckBroker) Publish(room string, msg []byte, id string, done func(error)) {
	if room == "silent" {
		return
	}
	b.MemoryBroker.Publish(room, msg, id, done)
}

// TestBackendCallsStopWaiting: a backend call whose context ends stops
// waiting for a broker that does not answer.
func TestBackendCallsStopWaiting(t *testing.T) {
	mb := chat.NewMemoryBroker()
	hub, _, _ := startChat(t, chat.Config{Broker: stuckBroker{mb}, Presence: mb, Reads: mb}, engine.Config{})
	for _, tc := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"History", func(ctx context.Context) error { _, err := hub.History(ctx, "stuck", 10); return err }},
		{"Presence", func(ctx context.Context) error { _, err := hub.Presence(ctx, "stuck"); return err }},
		{"Search", func(ctx context.Context) error { _, err := hub.Search(ctx, "stuck", "x", 0, 10); return err }},
		{"Publish", func(ctx context.Context) error { return hub.Publish(ctx, "silent", "hello", chat.Sender{}) }},
		{"DeleteMessage", func(ctx context.Context) error { return hub.DeleteMessage(ctx, "stuck", 1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := tc.call(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s: %v, want the context's deadline", tc.name, err)
			}
		})
	}
}
