package chat_test

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/loadtest"
)

// presenceCounter counts presence messages delivered to the pool.
type presenceCounter struct{ presence, total atomic.Int64 }

func (p *presenceCounter) OnMessage(_ int, data []byte) {
	p.total.Add(1)
	if bytes.HasPrefix(data, []byte(`{"type":"presence"`)) {
		p.presence.Add(1)
	}
}
func (p *presenceCounter) OnClose(int, int, error) {}

// TestJoinStorm: thousands of clients join one room at once. Without
// coalescing each join would be told to every member already there,
// N(N-1)/2 deliveries. With it, a presence message goes to the room at most
// once per PresenceInterval, so presence deliveries are at most
// N x (storm duration / interval + 2).
func TestJoinStorm(t *testing.T) {
	const n = 3000
	const interval = 100 * time.Millisecond
	for _, tc := range []struct {
		name      string
		largeRoom int
		counts    time.Duration
	}{
		{"counts only", 200, interval},            // above LargeRoom: member counts
		{"counts every second", 200, time.Second}, // the same, counts less often
		{"coalesced lists", 1e6, interval},        // below: who joined, coalesced
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub, srv, url := startChat(t, chat.Config{PresenceInterval: interval, LargeRoom: tc.largeRoom,
				LargeRoomCounts: tc.counts}, engine.Config{})
			pc := &presenceCounter{}
			pool, err := loadtest.NewPool(loadtest.Config{Targets: []string{url}, Clients: n, Dialers: 64, Logger: quiet()}, pc)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			began := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			pool.DialAll(ctx)
			if pool.Connected() != n {
				t.Fatalf("connected %d of %d: %v", pool.Connected(), n, pool.Failures())
			}
			// The storm ends when the server has opened every client (each
			// open joins the lobby).
			poll.Within(t, 30*time.Second, fmt.Sprintf("%d clients open", n), func() bool { return srv.Stats().Clients == n })
			stormEnd := time.Now()
			<-time.After(3 * interval) // let the last coalesced presence go out
			st := hub.Stats()
			storm := stormEnd.Sub(began)
			every := max(interval, tc.counts)
			bound := int64(n) * (int64(storm/every) + 2 + int64(3*interval/every))
			naive := int64(n) * (n - 1) / 2
			got := pc.presence.Load()
			t.Logf("%s: %d joins in %v; %d presence messages, %d presence deliveries (bound %d; one event per join would be %d)",
				tc.name, n, storm.Round(time.Millisecond), st.PresenceSent, got, bound, naive)
			if got > bound {
				t.Fatalf("%d presence deliveries, above the bound %d", got, bound)
			}
			if got == 0 || st.PresenceSent == 0 {
				t.Fatal("no presence was sent")
			}
		})
	}
}
