package chat_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// slowBroker is a MemoryBroker whose Subscribe of one room hangs until
// released, as a NATS slow to answer would.
type slowBroker struct {
	*chat.MemoryBroker
	room        string
	subscribing chan struct{}
	release     chan struct{}
}

func (b *slowBroker) Subscribe(ctx context.Context, room string) (chat.RoomState, error) {
	if room == b.room {
		close(b.subscribing)
		<-b.release
	}
	return b.MemoryBroker.Subscribe(ctx, room)
}

// TestNoStallWhileARoomOpens: while the broker takes its time opening a
// room, other rooms are made and used, and the broker's own calls for the
// room being opened (a message, presence news) return at once; the
// message is in the room's history when it opens.
func TestNoStallWhileARoomOpens(t *testing.T) {
	t.Parallel()
	b := &slowBroker{MemoryBroker: chat.NewMemoryBroker(), room: "slow", subscribing: make(chan struct{}), release: make(chan struct{})}
	hub, _, url := startChat(t, chat.Config{Broker: b}, engine.Config{})
	released := false
	free := func() {
		if !released {
			released = true
			close(b.release)
		}
	}
	t.Cleanup(free)
	alice, bob := connect(t, url), connect(t, url)
	alice.Send(protocol.Request{Type: protocol.TypeJoin, Room: "slow"})
	select {
	case <-b.subscribing:
	case <-time.After(10 * time.Second):
		t.Fatal("the room was never subscribed to")
	}

	// Another room is made and used meanwhile.
	bob.Send(protocol.Request{Type: protocol.TypeJoin, Room: "fast"})
	bob.Expect("join")
	bob.Expect("history")
	bob.Send(protocol.Request{Type: protocol.TypeSay, Room: "fast", Text: "hi"})
	if m := bob.Expect("message"); m.Room != "fast" || m.Text != "hi" {
		t.Fatalf("in another room: %+v", m)
	}
	// The broker's calls for the room being opened do not wait for it.
	returned := make(chan struct{})
	go func() {
		hub.HandlePresence("slow", "n2", []byte(`{"count":1,"joined":["carol"]}`))
		hub.HandleMessage("slow", 1, []byte(`{"from":"carol","text":"early","ts":1}`))
		hub.HandleNodeGone("n3")
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("the broker's calls for a room being opened waited for it")
	}

	free()
	j := alice.Expect("join")
	if h := alice.Expect("history"); j.Room != "slow" || j.Seq != 1 || !slices.Equal(h.Texts(t), []string{"early"}) {
		t.Fatalf("the room once open: join %+v, history %q; want seq 1 and the message delivered while it opened", j, h.Texts(t))
	}
}
