package engine_test

import (
	"context"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wstest"
)

// dialSlow connects a client that never reads, with a 4 KiB receive buffer.
func dialSlow(t *testing.T, url string) *wstest.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := wstest.DialWith(ctx, wstest.SmallReceiveBuffer(4<<10), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSlowConsumer: one client stops reading while 100 others receive a
// stream of broadcasts. The slow one misses messages past the soft limit and
// is closed with 1008 after SlowConsumerTimeout; the others get everything,
// in order; the bytes queued for the slow one never pass the hard limit.
func TestSlowConsumer(t *testing.T) {
	const (
		others = 100
		msgs   = 4000
		size   = 1024
		soft   = 64 << 10
		hard   = 256 << 10
	)
	app := newRecorder()
	srv, url := start(t, engine.Config{
		SendQueueSoftLimit: soft, SendQueueHardLimit: hard, SlowConsumerTimeout: time.Second,
		SocketWriteBuffer: 16 << 10, CloseTimeout: 200 * time.Millisecond,
	}, app, func(s *engine.Server) { s.SetTickInterval(50 * time.Millisecond) })

	dialSlow(t, url)
	slowID := app.next(t, "open").id
	oc := &orderChecker{next: make([]uint64, others)}
	dialPool(t, url, others, oc)
	poll.Within(t, 10*time.Second, "every client open", func() bool { return srv.Stats().Clients == others+1 })
	ep := app.endpoint()

	msg := make([]byte, size)
	slow := []engine.ClientID{slowID}
	for i := range msgs {
		binary.BigEndian.PutUint64(msg, uint64(i))
		// The others check 8-byte sequence numbers: send them the prefix.
		if _, err := ep.Broadcast(engine.Binary, msg[:8], slowID); err != nil {
			t.Fatal(err)
		}
		_, _ = ep.Multicast(slow, engine.Binary, msg) // sent to many: skipped past the soft limit
	}
	// Once the writers are through, the slow client's queue sits between
	// the limits: backed up past the soft one, never past the hard one.
	// Once the writers are through, the slow client is behind (it missed
	// messages) with its queue bounded by the soft limit plus one message.
	poll.Within(t, 10*time.Second, "messages to the slow client skipped", func() bool { return srv.Stats().SkippedSlow > 0 })
	poll.Within(t, 10*time.Second, "the writers to finish", func() bool {
		return srv.Stats().Deliveries >= others*msgs
	})
	info, err := ep.Info(slowID)
	if err != nil {
		t.Fatalf("slow client closed before SlowConsumerTimeout: %v", err)
	}
	if info.QueuedBytes <= 0 || info.QueuedBytes > soft+size+8 {
		t.Fatalf("slow client has %d bytes queued, want some and at most %d", info.QueuedBytes, soft+size+8)
	}
	e := app.next(t, "close")
	if e.id != slowID || e.code != engine.StatusPolicyViolation || e.reason != "slow consumer" {
		t.Fatalf("OnClose %+v, want the slow client with 1008 slow consumer", e)
	}
	poll.Within(t, 30*time.Second, "every delivery to the others", func() bool {
		return oc.received.Load()+oc.bad.Load() >= others*msgs
	})
	if bad := oc.bad.Load(); bad != 0 {
		t.Fatalf("%d messages to healthy clients out of order or lost", bad)
	}
	st := srv.Stats()
	if st.ClosedSlow != 1 || st.SkippedSlow == 0 {
		t.Fatalf("ClosedSlow %d SkippedSlow %d, want 1 and some", st.ClosedSlow, st.SkippedSlow)
	}
	if st.QueuedBytes > 0 {
		t.Fatalf("%d bytes still queued after the slow client left", st.QueuedBytes)
	}
	t.Logf("slow client: %d bytes queued, %d messages skipped, then closed", info.QueuedBytes, st.SkippedSlow)
}

// TestSendIsNeverSkipped: a message to one client (a reply, a history
// replay) is queued past the soft limit, not skipped: the client that
// reads it late still gets every one. Only the hard limit closes it.
func TestSendIsNeverSkipped(t *testing.T) {
	const n, size = 100, 1024
	app := newRecorder()
	srv, url := start(t, engine.Config{
		SendQueueSoftLimit: 16 << 10, SendQueueHardLimit: 1 << 20, SlowConsumerTimeout: time.Hour,
		SocketWriteBuffer: 4 << 10,
	}, app)
	c := dialSlow(t, url)
	id := app.next(t, "open").id
	ep := app.endpoint()
	msg := make([]byte, size)
	for i := range n {
		msg[0] = byte(i)
		if err := ep.Send(id, engine.Binary, msg); err != nil {
			t.Fatal(err)
		}
	}
	poll.Within(t, 10*time.Second, "the queue past the soft limit", func() bool {
		info, err := ep.Info(id)
		return err == nil && info.QueuedBytes > 16<<10
	})
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	for i := range n {
		_, b, err := c.ReadMessage()
		if err != nil || len(b) != size || b[0] != byte(i) {
			t.Fatalf("message %d: %d bytes starting %v, err %v", i, len(b), b[:min(1, len(b))], err)
		}
	}
	if st := srv.Stats(); st.SkippedSlow != 0 || st.ClosedSlow != 0 {
		t.Fatalf("SkippedSlow %d ClosedSlow %d, want 0 and 0", st.SkippedSlow, st.ClosedSlow)
	}
}

// TestHardLimitCloses: with no room between the limits, a client that
// stops reading is closed as soon as its queue would pass the hard limit.
func TestHardLimitCloses(t *testing.T) {
	app := newRecorder()
	srv, url := start(t, engine.Config{
		SendQueueSoftLimit: 64 << 10, SendQueueHardLimit: 64 << 10, SlowConsumerTimeout: time.Hour,
		SocketWriteBuffer: 16 << 10, CloseTimeout: 200 * time.Millisecond,
	}, app)
	dialSlow(t, url)
	id := app.next(t, "open").id
	ep := app.endpoint()
	msg := make([]byte, 1024)
	for i := 0; i < 10000; i++ {
		if err := ep.Send(id, engine.Binary, msg); err != nil {
			break // closing
		}
	}
	if e := app.next(t, "close"); e.code != engine.StatusPolicyViolation || e.reason != "slow consumer" {
		t.Fatalf("OnClose %+v, want 1008 slow consumer", e)
	}
	if st := srv.Stats(); st.ClosedSlow != 1 {
		t.Fatalf("ClosedSlow = %d", st.ClosedSlow)
	}
}

// TestSocketBuffers: the kernel buffers set on the listening socket are
// every client socket's (one setsockopt at start, none per connection).
func TestSocketBuffers(t *testing.T) {
	limit := func(name string) int {
		b, err := os.ReadFile("/proc/sys/net/core/" + name)
		if err != nil {
			t.Skipf("no %s: %v", name, err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	const rcv, snd = 96 << 10, 48 << 10
	app := newRecorder()
	_, url := start(t, engine.Config{SocketReadBuffer: rcv, SocketWriteBuffer: snd}, app)
	c := dial(t, url, nil)
	defer c.Close()
	id := app.next(t, "open").id
	gotRcv, gotSnd, err := engine.SocketBuffersOf(app.endpoint(), id)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel doubles what it is given, within its maxima.
	if want := 2 * min(rcv, limit("rmem_max")); gotRcv != want {
		t.Errorf("SO_RCVBUF %d, want %d", gotRcv, want)
	}
	if want := 2 * min(snd, limit("wmem_max")); gotSnd != want {
		t.Errorf("SO_SNDBUF %d, want %d", gotSnd, want)
	}
}
