package engine_test

import (
	"context"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wstest"
	"github.com/parleyhq/parley/loadtest"
)

// orderChecker is a loadtest.Handler that checks each client receives
// 8-byte big-endian sequence numbers 0, 1, 2, ... with nothing else.
type orderChecker struct {
	next     []uint64 // per client; touched only by that client's poller
	received atomic.Int64
	bad      atomic.Int64
	closed   atomic.Int64
}

func (o *orderChecker) OnMessage(client int, data []byte) {
	if len(data) != 8 || binary.BigEndian.Uint64(data) != o.next[client] {
		o.bad.Add(1)
		return
	}
	o.next[client]++
	o.received.Add(1)
}

func (o *orderChecker) OnClose(int, int, error) { o.closed.Add(1) }

func dialPool(t testing.TB, url string, n int, h loadtest.Handler) *loadtest.Pool {
	t.Helper()
	pool, err := loadtest.NewPool(loadtest.Config{
		Targets: []string{url}, Clients: n, Dialers: 32, Logger: slog.New(slog.DiscardHandler),
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool.DialAll(ctx)
	if pool.Connected() != n {
		t.Fatalf("connected %d of %d: %v", pool.Connected(), n, pool.Failures())
	}
	return pool
}

// TestLoopbackBurst: thousands of real clients, a burst of 100 broadcasts.
// Every client gets all 100 in order, and the server makes about one write
// per client per round, far fewer than clients x messages.
func TestLoopbackBurst(t *testing.T) {
	const members, burst = 3000, 100
	app := newRecorder()
	srv, url := start(t, engine.Config{}, app)
	oc := &orderChecker{next: make([]uint64, members)}
	dialPool(t, url, members, oc)
	poll.Within(t, 30*time.Second, "every client open", func() bool { return srv.Stats().Clients == members })
	ep := app.endpoint()
	before := srv.Stats()

	var msg [8]byte
	for i := range burst {
		binary.BigEndian.PutUint64(msg[:], uint64(i))
		if _, err := ep.Broadcast(engine.Binary, msg[:]); err != nil {
			t.Fatal(err)
		}
	}
	poll.Within(t, 60*time.Second, "every delivery", func() bool {
		return oc.received.Load()+oc.bad.Load() >= members*burst
	})
	if bad := oc.bad.Load(); bad != 0 {
		t.Fatalf("%d messages out of order or corrupt", bad)
	}
	// A write is counted once it returned: a writer descheduled between
	// its write and its count (a busy machine) counts after its client
	// read the frames. Wait for the count, then check it is exact.
	poll.Within(t, 30*time.Second, "the server to count every delivery", func() bool {
		return srv.Stats().Deliveries-before.Deliveries >= members*burst
	})
	after := srv.Stats()
	writes := after.Writes - before.Writes
	rounds := after.Rounds - before.Rounds
	deliveries := after.Deliveries - before.Deliveries
	if deliveries != members*burst {
		t.Fatalf("server counted %d deliveries, want %d", deliveries, members*burst)
	}
	if after.FramesEncoded-before.FramesEncoded != burst {
		t.Fatalf("frames encoded: %d, want %d (once per message)", after.FramesEncoded-before.FramesEncoded, burst)
	}
	t.Logf("%d members x %d messages: %d writes in %d writer rounds (%.2f writes per member, %.1f frames per write)",
		members, burst, writes, rounds, float64(writes)/members, float64(deliveries)/float64(writes))
	// Each member is written at most once per round of its writer.
	if writes > members*rounds {
		t.Fatalf("%d writes exceed members x rounds (%d)", writes, members*rounds)
	}
	if writes >= members*burst/5 {
		t.Fatalf("%d writes: coalescing failed (members x messages = %d)", writes, members*burst)
	}
}

// The write path must never use nbio's Writev with several buffers: it
// loses data on partial writes (research/nbio.md, P1).
func TestNoWritev(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), ".Writev(") {
			t.Errorf("%s calls Writev", f)
		}
	}
}

// TestFlushWindow: an idle writer writes at once, and so does one whose
// last round was a lone write (a reply, sent by its sender's goroutine);
// after a busy round (more than one write), messages posted within the
// window wait for its end and share one write.
func TestFlushWindow(t *testing.T) {
	t.Parallel()
	// Long enough that scheduling under a loaded -race run cannot break either
	// half of the test (200 ms flaked once in a full make test).
	const window = time.Second
	app := newRecorder()
	srv, url := start(t, engine.Config{Writers: 1, FlushWindow: window}, app)
	c := dial(t, url, nil)
	id := app.next(t, "open").id
	other := dial(t, url, nil)
	app.next(t, "open")
	ep := app.endpoint()

	// Lone replies, one after another: each goes out at once, no window.
	// And once the writer is idle, one is written by its sender: on a busy
	// machine the writer's goroutine may still hold the round that wrote
	// the 101s when the first reply is sent (that reply is then posted, and
	// correctly so), but it lets go of it in the end.
	replies := 0
	for ; srv.Stats().SenderRounds == 0; replies++ {
		if replies == 1000 {
			t.Fatal("1,000 lone replies, none written by its sender")
		}
		m := strconv.Itoa(replies)
		began := time.Now()
		if err := ep.Send(id, engine.Text, []byte(m)); err != nil {
			t.Fatal(err)
		}
		if got, err := c.ReadText(); err != nil || got != m {
			t.Fatalf("got %q, %v; want %q", got, err, m)
		}
		if took := time.Since(began); took > window/2 {
			t.Fatalf("a lone reply took %v (window %v)", took, window)
		}
	}
	// The counters move after a round's writes: wait for the two 101s and
	// the replies to be counted.
	writes := uint64(2 + replies)
	poll.Within(t, 5*time.Second, "the replies' writes to be counted", func() bool { return srv.Stats().Writes == writes })

	// A broadcast to both is a busy round (two writes): it opens a window.
	began := time.Now()
	if _, err := ep.Broadcast(engine.Text, []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, cc := range []*wstest.Conn{c, other} {
		if got, err := cc.ReadText(); err != nil || got != "x" {
			t.Fatalf("got %q, %v; want x", got, err)
		}
	}
	// The counters move after a round's writes: wait for the broadcast's
	// two to be counted.
	poll.Within(t, 5*time.Second, "the broadcast's writes to be counted", func() bool { return srv.Stats().Writes == writes+2 })
	writes += 2
	_ = ep.Send(id, engine.Text, []byte("c"))
	_ = ep.Send(id, engine.Text, []byte("d"))
	for _, want := range []string{"c", "d"} {
		if got, err := c.ReadText(); err != nil || got != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
	if took := time.Since(began); took < window {
		t.Fatalf("c and d came %v after a busy round, within its window (%v)", took, window)
	}
	// The counters move after the round's writes: wait for them, then check.
	poll.Within(t, 5*time.Second, "the write to be counted", func() bool { return srv.Stats().Writes > writes })
	if n := srv.Stats().Writes - writes; n != 1 {
		t.Fatalf("c and d took %d writes, want 1 (they were posted within the window)", n)
	}
}
