package engine_test

import (
	"encoding/binary"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wsproto"
	"github.com/parleyhq/parley/internal/wstest"
)

// TestInputBackpressure: two clients flood messages faster than the
// application handles them. The server stops reading a client once its
// backlog passes MaxPendingInput (or the total passes
// MaxPendingInputTotal) and reads it again once the application has
// caught up: the backlog stays bounded, nobody is closed and every message
// arrives, in order. Before, the poller kept reading and queued without
// bound (two flooders took a server to 2.39 GB).
func TestInputBackpressure(t *testing.T) {
	const (
		budget  = 16 << 10
		total   = 24 << 10
		size    = 1024
		clients = 2
		frames  = 4 << 10 // 4 MiB each
	)
	app := newRecorder()
	app.events = make(chan event, 4*clients*frames)
	srv, url := start(t, engine.Config{MaxMessageSize: size, MaxPendingInput: budget, MaxPendingInputTotal: total}, app)
	got := make([]atomic.Int64, clients) // messages handled per client, in order
	var bad, peak atomic.Int64
	ids := make([]engine.ClientID, clients)
	app.onMessage = func(_ *engine.Endpoint, id engine.ClientID, _ engine.MessageType, data []byte) {
		time.Sleep(100 * time.Microsecond) // a slow application
		if p := srv.Stats().PendingInput; p > peak.Load() {
			peak.Store(p) // racy max: a lower bound of the true peak
		}
		for k := range ids {
			if ids[k] == id {
				if binary.BigEndian.Uint64(data) != uint64(got[k].Load()) {
					bad.Add(1)
				}
				got[k].Add(1)
			}
		}
	}
	errs := make(chan error, clients)
	conns := make([]*wstest.Conn, clients)
	for k := range clients {
		conns[k] = dial(t, url, nil)
		ids[k] = app.next(t, "open").id
	}
	for _, c := range conns {
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		go func() {
			msg := make([]byte, size)
			for i := range frames {
				binary.BigEndian.PutUint64(msg, uint64(i))
				if err := c.WriteFrame(wsproto.OpBinary, true, msg); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}

	for range clients {
		if err := <-errs; err != nil {
			t.Fatalf("flooder: %v", err)
		}
	}
	poll.Within(t, 60*time.Second, "every message handled", func() bool {
		return got[0].Load() == frames && got[1].Load() == frames
	})
	st := srv.Stats()
	if bad.Load() != 0 || st.Clients != clients || st.PendingInput != 0 || st.RateLimited != 0 {
		t.Fatalf("%d out of order; %d clients; %d bytes pending; %d closed", bad.Load(), st.Clients, st.PendingInput, st.RateLimited)
	}
	if st.InputPaused == 0 || peak.Load() > total+clients*size {
		t.Fatalf("paused %d times, peak backlog %d bytes: want some pauses and at most %d", st.InputPaused, peak.Load(), total+clients*size)
	}
	t.Logf("paused %d times; backlog peak seen %d bytes", st.InputPaused, peak.Load())
}

// TestStuckApplicationBoundsInput: while the application handles nothing,
// a flooder's backlog stops at MaxPendingInput; one that keeps sending
// into its paused socket is closed with 1008 once 4 budgets wait unread,
// so a stuck handler never lets a client grow the server's memory.
func TestStuckApplicationBoundsInput(t *testing.T) {
	const budget, size = 16 << 10, 1024
	gate := make(chan struct{})
	app := newRecorder()
	app.events = make(chan event, 1<<16)
	app.onMessage = func(*engine.Endpoint, engine.ClientID, engine.MessageType, []byte) { <-gate }
	srv, url := start(t, engine.Config{MaxMessageSize: size, MaxPendingInput: budget}, app)
	defer close(gate)
	c := dial(t, url, nil)
	app.next(t, "open")
	_ = c.NetConn().SetWriteDeadline(time.Now().Add(3 * time.Second))
	msg := make([]byte, size)
	sent := 0
	for ; sent < 64<<10; sent++ { // 64 MiB at most
		if c.WriteFrame(wsproto.OpBinary, true, msg) != nil {
			break // blocked past the deadline, or dropped by the server
		}
	}
	st := srv.Stats()
	if st.InputPaused == 0 || st.PendingInput > budget+size {
		t.Fatalf("paused %d times, %d bytes pending: want a pause and at most %d", st.InputPaused, st.PendingInput, budget+size)
	}
	t.Logf("sent %d frames; %d bytes pending; closed for flooding: %d", sent, st.PendingInput, st.RateLimited)
}

// TestSetReadingReachesThePoller: pausing takes the socket out of nbio's
// epoll set through nbio's internals; this fails if nbio's layout changed
// (the engine would then fall back to the low-water mark alone).
func TestSetReadingReachesThePoller(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("epoll only")
	}
	app := newRecorder()
	_, url := start(t, engine.Config{}, app)
	c := dial(t, url, nil)
	id := app.next(t, "open").id
	if !engine.SetReadingOf(app.endpoint(), id, false) || !engine.SetReadingOf(app.endpoint(), id, true) {
		t.Fatal("setReading could not change nbio's epoll registration")
	}
	if err := c.WriteText("still read"); err != nil {
		t.Fatal(err)
	}
	if e := app.next(t, "message"); e.msg != "still read" {
		t.Fatalf("%+v", e)
	}
}

// TestCloseDropsBacklog: once the application closes a client, the
// messages it had in flight are not handed on: a flooder closed by a rate
// limit used to have thousands of requests decoded and refused until its
// close handshake ended, slowing everyone else.
func TestCloseDropsBacklog(t *testing.T) {
	app := newRecorder()
	var handled atomic.Int64
	app.onMessage = func(ep *engine.Endpoint, id engine.ClientID, _ engine.MessageType, _ []byte) {
		if handled.Add(1) == 1 {
			_ = ep.Close(id, engine.StatusPolicyViolation, "enough")
		}
	}
	_, url := start(t, engine.Config{}, app)
	c := dial(t, url, nil)
	app.next(t, "open")
	var burst []byte
	for range 2000 {
		burst = wsproto.AppendMaskedFrame(burst, wsproto.OpText, true, []byte("spam"), [4]byte{1, 2, 3, 4})
	}
	if err := c.WriteRaw(burst); err != nil {
		t.Fatal(err)
	}
	if e := app.next(t, "close"); e.code != engine.StatusPolicyViolation {
		t.Fatalf("close %+v", e)
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("%d messages handled after the close, want 1", n)
	}
}

// TestClosedFlooderIsNotRead: a client the application closes for a policy
// (1008) is not read any more while its close frame goes out: what it keeps
// sending stays in TCP. It used to be read and skipped for the whole
// CloseTimeout, gigabytes a second of a flooder's junk on loopback.
func TestClosedFlooderIsNotRead(t *testing.T) {
	app := newRecorder()
	app.onMessage = func(ep *engine.Endpoint, id engine.ClientID, _ engine.MessageType, _ []byte) {
		_ = ep.Close(id, engine.StatusPolicyViolation, "rate limit exceeded")
	}
	srv, url := start(t, engine.Config{CloseTimeout: time.Minute}, app)
	c := dial(t, url, nil)
	app.next(t, "open")
	if err := c.WriteText("first"); err != nil {
		t.Fatal(err)
	}
	app.next(t, "message")
	_ = c.NetConn().SetWriteDeadline(time.Now().Add(3 * time.Second))
	junk := wsproto.AppendMaskedFrame(nil, wsproto.OpBinary, true, make([]byte, 64<<10), [4]byte{1, 2, 3, 4})
	sent := 0
	for sent < 256<<20 { // 256 MiB at most; the server's window closes long before
		if err := c.WriteRaw(junk); err != nil {
			break
		}
		sent += len(junk)
	}
	read := srv.Stats().BytesRead
	if sent >= 256<<20 || read > 16<<20 {
		t.Fatalf("the closed client wrote %d bytes, the server read %d: it kept reading", sent, read)
	}
	t.Logf("the closed client got %d bytes out before TCP stopped it; the server read %d", sent, read)
}
