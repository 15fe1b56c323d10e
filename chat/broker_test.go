package chat_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/parleyhq/parley/chat"
)

// recordingHandler keeps every publication.
type recordingHandler struct {
	mu  sync.Mutex
	got []string
}

func (r *recordingHandler) HandlePublication(room string, data []byte) {
	r.mu.Lock()
	r.got = append(r.got, room+":"+string(data))
	r.mu.Unlock()
}

// testBroker is the conformance test every Broker passes: delivery to
// subscribed rooms only, in publish order, subscribe idempotent.
func testBroker(t *testing.T, b chat.Broker, wait func(h *recordingHandler, n int)) {
	h := &recordingHandler{}
	if err := b.Run(h); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, r := range []string{"a", "b", "b"} {
		if err := b.Subscribe(r); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		for _, r := range []string{"a", "b", "c"} {
			if err := b.Publish(r, []byte(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = b.Unsubscribe("b")
	_ = b.Publish("b", []byte("after unsubscribe"))
	_ = b.Publish("a", []byte("last"))
	wait(h, 11)
	h.mu.Lock()
	defer h.mu.Unlock()
	var a, bs []string
	for _, g := range h.got {
		switch g[0] {
		case 'a':
			a = append(a, g)
		case 'b':
			bs = append(bs, g)
		default:
			t.Fatalf("delivered %q from a room not subscribed", g)
		}
	}
	if !slices.Equal(a, []string{"a:0", "a:1", "a:2", "a:3", "a:4", "a:last"}) ||
		!slices.Equal(bs, []string{"b:0", "b:1", "b:2", "b:3", "b:4"}) {
		t.Fatalf("delivered %v", h.got)
	}
}

func TestMemoryBroker(t *testing.T) {
	testBroker(t, chat.NewMemoryBroker(), func(*recordingHandler, int) {}) // synchronous
	b := chat.NewMemoryBroker()
	if err := b.Publish("a", nil); !errors.Is(err, chat.ErrBrokerNotRunning) {
		t.Fatalf("Publish before Run: %v", err)
	}
}

type nopHandler struct{}

func (nopHandler) HandlePublication(string, []byte) {}

// BenchmarkMemoryBrokerPublish: the in-memory path is a map lookup under a
// read lock and a direct call.
func BenchmarkMemoryBrokerPublish(b *testing.B) {
	br := chat.NewMemoryBroker()
	_ = br.Run(nopHandler{})
	_ = br.Subscribe("lobby")
	data := []byte(`{"type":"message"}`)
	b.ReportAllocs()
	for b.Loop() {
		_ = br.Publish("lobby", data)
	}
}
