package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wsproto"
	"github.com/parleyhq/parley/internal/wstest"
)

func TestShutdownSendsGoingAway(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	srv, url := start(t, engine.Config{Writers: 2}, app)
	const n = 50
	conns, ids := connect(t, app, url, n)
	ep := app.endpoint()
	// Messages queued before Shutdown arrive before the close frame.
	if _, err := ep.Broadcast(engine.Text, []byte("last words")); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := c.ReadText(); err != nil || got != "last words" {
				errs <- errors.New("client " + string(rune('0'+i%10)) + ": no message before close")
				return
			}
			ce, err := c.ExpectClose()
			if err != nil || ce.Code != 1001 || ce.Reason != "server shutting down" {
				errs <- err
				return
			}
			_ = c.WriteClose(1001, "")
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	closed := map[engine.ClientID]bool{}
	for range n {
		e := app.next(t, "close")
		if e.code != engine.StatusGoingAway {
			t.Errorf("OnClose code %v, want 1001", e.code)
		}
		closed[e.id] = true
	}
	for _, id := range ids {
		if !closed[id] {
			t.Errorf("client %d got no OnClose", id)
		}
	}
	app.expect(t, "stop") // after every OnClose
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	// New connections are refused once the server is down.
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer dcancel()
	if _, _, err := wstest.Dial(dctx, url, nil); err == nil {
		t.Fatal("dial after Shutdown succeeded")
	}
}

func TestShutdownDropsUnresponsiveClients(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	srv, url := start(t, engine.Config{CloseTimeout: 200 * time.Millisecond}, app)
	connect(t, app, url, 3) // these never answer the close frame
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("Shutdown took %v with CloseTimeout 200ms", took)
	}
	for range 3 {
		app.next(t, "close")
	}
	app.expect(t, "stop")
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	srv, url := start(t, engine.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: time.Second}, app,
		func(s *engine.Server) { s.SetTickInterval(50 * time.Millisecond) })
	healthy := dial(t, url, nil)
	healthyID := app.next(t, "open").id
	dead := dial(t, url, nil)
	deadID := app.next(t, "open").id
	dead.AutoPong = false

	// The healthy client answers pings (inside ReadMessage) and stays; the
	// silent one is closed with 1008. Read both until the dead one is gone.
	go func() {
		for {
			if _, _, err := healthy.ReadMessage(); err != nil {
				return
			}
		}
	}()
	var pinged bool
	for {
		h, p, err := dead.ReadFrame()
		if err != nil {
			t.Fatalf("silent client: %v", err)
		}
		if h.Op == wsproto.OpPing {
			pinged = true
			continue
		}
		if h.Op == wsproto.OpClose {
			code, reason, _ := wsproto.ParseClosePayload(p)
			if code != 1008 || reason != "heartbeat timeout" {
				t.Fatalf("close %d %q, want 1008 heartbeat timeout", code, reason)
			}
			break
		}
	}
	if !pinged {
		t.Fatal("the silent client was closed without a ping first")
	}
	e := app.next(t, "close")
	if e.id != deadID || e.code != engine.StatusPolicyViolation {
		t.Fatalf("OnClose %+v, want client %d with 1008", e, deadID)
	}
	// Two more intervals: the healthy client, pinged meanwhile, is still open.
	st := srv.Stats()
	poll.Within(t, 10*time.Second, "two more pings", func() bool { return srv.Stats().PingsSent >= st.PingsSent+2 })
	if _, err := app.endpoint().Info(healthyID); err != nil {
		t.Fatalf("healthy client closed: %v", err)
	}
	if got := srv.Stats().HeartbeatTimeouts; got != 1 {
		t.Fatalf("HeartbeatTimeouts = %d, want 1", got)
	}
}

func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	_, url := start(t, engine.Config{MaxMessageSize: 1000}, app)
	key := [4]byte{9, 8, 7, 6}
	for _, tc := range []struct {
		name string
		send []byte
		code int
	}{
		{"unmasked frame", wsproto.AppendFrame(nil, wsproto.OpText, []byte("hi")), 1002},
		{"reserved opcode", wsproto.AppendMaskedFrame(nil, wsproto.Opcode(3), true, nil, key), 1002},
		{"RSV1 without extension", func() []byte {
			b := wsproto.AppendMaskedFrame(nil, wsproto.OpText, true, []byte("x"), key)
			b[0] |= 0x40
			return b
		}(), 1002},
		{"fragmented ping", wsproto.AppendMaskedFrame(nil, wsproto.OpPing, false, nil, key), 1002},
		{"ping of 126 bytes", wsproto.AppendMaskedFrame(nil, wsproto.OpPing, true, make([]byte, 126), key), 1002},
		{"continuation without start", wsproto.AppendMaskedFrame(nil, wsproto.OpContinuation, true, []byte("x"), key), 1002},
		{"message too big", wsproto.AppendMaskedFrame(nil, wsproto.OpBinary, true, make([]byte, 1001), key), 1009},
		{"fragments too big", append(wsproto.AppendMaskedFrame(nil, wsproto.OpBinary, false, make([]byte, 600), key),
			wsproto.AppendMaskedFrame(nil, wsproto.OpContinuation, true, make([]byte, 600), key)...), 1009},
		{"invalid UTF-8", wsproto.AppendMaskedFrame(nil, wsproto.OpText, true, []byte{0xc3, 0x28}, key), 1007},
		{"close code 1005 on the wire", wsproto.AppendMaskedFrame(nil, wsproto.OpClose, true, []byte{0x03, 0xED}, key), 1002},
		{"close reason not UTF-8", wsproto.AppendMaskedFrame(nil, wsproto.OpClose, true, []byte{0x03, 0xE8, 0xff}, key), 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dial(t, url, nil)
			if err := c.WriteRaw(tc.send); err != nil {
				t.Fatal(err)
			}
			ce, err := c.ExpectClose()
			if err != nil || ce.Code != tc.code {
				t.Fatalf("close = %+v, %v; want %d", ce, err, tc.code)
			}
			// Once the peer answers, the server drops the socket at once.
			_ = c.WriteClose(ce.Code, "")
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.NetConn().Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("after the close handshake: %v, want EOF", err)
			}
		})
	}
}

func TestEmptyAndFragmentedMessages(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	_, url := start(t, engine.Config{}, app)
	c := dial(t, url, nil)
	app.next(t, "open")
	key := [4]byte{1, 2, 3, 4}
	var b []byte
	b = wsproto.AppendMaskedFrame(b, wsproto.OpText, true, nil, key)   // empty text
	b = wsproto.AppendMaskedFrame(b, wsproto.OpBinary, true, nil, key) // empty binary
	b = wsproto.AppendMaskedFrame(b, wsproto.OpText, false, nil, key)  // empty fragments
	b = wsproto.AppendMaskedFrame(b, wsproto.OpContinuation, true, nil, key)
	b = wsproto.AppendMaskedFrame(b, wsproto.OpText, false, []byte("frag"), key)
	b = wsproto.AppendMaskedFrame(b, wsproto.OpPing, true, []byte("p"), key) // control between fragments
	b = wsproto.AppendMaskedFrame(b, wsproto.OpContinuation, false, []byte("men"), key)
	b = wsproto.AppendMaskedFrame(b, wsproto.OpContinuation, true, []byte("ted é"), key)
	// Trickle it one byte at a time.
	for i := range b {
		if err := c.WriteRaw(b[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range []struct {
		typ engine.MessageType
		msg string
	}{{engine.Text, ""}, {engine.Binary, ""}, {engine.Text, ""}, {engine.Text, "fragmented é"}} {
		if e := app.next(t, "message"); e.typ != want.typ || e.msg != want.msg {
			t.Fatalf("message %d = %v %q, want %v %q", i, e.typ, e.msg, want.typ, want.msg)
		}
	}
	h, p, err := c.ReadFrame()
	if err != nil || h.Op != wsproto.OpPong || string(p) != "p" {
		t.Fatalf("pong = %v %q %v", h.Op, p, err)
	}
}

// nbhttp arms its HTTP keep-alive deadline (here HandshakeTimeout) on every
// new socket; an upgraded client must outlive it while idle, and a socket
// that never upgrades must not.
func TestIdleDeadlines(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	srv, url := start(t, engine.Config{HandshakeTimeout: 200 * time.Millisecond, HeartbeatInterval: -1}, app,
		func(s *engine.Server) { s.SetTickInterval(20 * time.Millisecond) })
	idle := dial(t, url, nil)
	id := app.next(t, "open").id

	silent, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	began := time.Now()
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("socket without a handshake: %v, want EOF", err)
	}
	if took := time.Since(began); took < 150*time.Millisecond {
		t.Fatalf("socket without a handshake dropped after %v, before HandshakeTimeout", took)
	}

	<-time.After(5 * 200 * time.Millisecond) // five handshake timeouts of silence
	if err := app.endpoint().Send(id, engine.Text, []byte("still here")); err != nil {
		t.Fatalf("idle client gone: %v", err)
	}
	if got, err := idle.ReadText(); err != nil || got != "still here" {
		t.Fatalf("idle client: %q, %v", got, err)
	}
}

// A valid message that arrives in the same read as a bad frame is handled
// before the client is closed (nbio drops it).
func TestMessageBeforeBadFrameIsDelivered(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	_, url := start(t, engine.Config{}, app)
	c := dial(t, url, nil)
	id := app.next(t, "open").id
	key := [4]byte{5, 6, 7, 8}
	b := wsproto.AppendMaskedFrame(nil, wsproto.OpText, true, []byte("last words"), key)
	b = append(b, wsproto.AppendFrame(nil, wsproto.OpText, []byte("unmasked"))...) // one write, one read
	if err := c.WriteRaw(b); err != nil {
		t.Fatal(err)
	}
	if e := app.next(t, "message"); e.id != id || e.msg != "last words" {
		t.Fatalf("message %+v, want the valid one", e)
	}
	if ce, err := c.ExpectClose(); err != nil || ce.Code != 1002 {
		t.Fatalf("close %+v, %v; want 1002", ce, err)
	}
}

// slowRelay broadcasts each message once release is closed.
type slowRelay struct {
	engine.BaseApplication
	ep       *engine.Endpoint
	started  chan struct{}
	release  chan struct{}
	startOne sync.Once
}

func (a *slowRelay) OnStart(ep *engine.Endpoint) error { a.ep = ep; return nil }
func (a *slowRelay) OnMessage(_ engine.ClientID, typ engine.MessageType, data []byte) {
	a.startOne.Do(func() { close(a.started) })
	<-a.release
	_, _ = a.ep.Broadcast(typ, data)
}

// TestShutdownDeliversAcceptedMessages: a message received before shutdown
// began, still being handled when it began, reaches every member before
// their close frame.
func TestShutdownDeliversAcceptedMessages(t *testing.T) {
	t.Parallel()
	app := &slowRelay{started: make(chan struct{}), release: make(chan struct{})}
	srv, url := start(t, engine.Config{}, app)
	a, b := dial(t, url, nil), dial(t, url, nil)
	poll.Within(t, 5*time.Second, "both clients open", func() bool { return srv.Stats().Clients == 2 })
	if err := a.WriteText("accepted before shutdown"); err != nil {
		t.Fatal(err)
	}
	<-app.started
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	poll.Within(t, 5*time.Second, "shutdown to begin", srv.Draining)
	close(app.release)
	for _, c := range []*wstest.Conn{a, b} {
		if got, err := c.ReadText(); err != nil || got != "accepted before shutdown" {
			t.Fatalf("got %q, %v; want the accepted message before the close", got, err)
		}
		if ce, err := c.ExpectClose(); err != nil || ce.Code != 1001 {
			t.Fatalf("then %+v, %v; want 1001", ce, err)
		}
		_ = c.WriteClose(1001, "")
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestNoFrameBeforeThe101: an application that keeps multicasting to
// every registered client while others connect never gets a frame to a
// client ahead of its 101 (the client was registered, and so reachable,
// before the 101 was queued: 60 of 224 handshakes failed).
func TestNoFrameBeforeThe101(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	app.events = make(chan event, 1<<16)
	_, url := start(t, engine.Config{}, app)
	app.next(t, "start")
	ep := app.endpoint()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = ep.Multicast(ep.Clients(), engine.Text, []byte("tick"))
		}
	}()
	defer func() { close(stop); <-done }()
	for i := range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, _, err := wstest.Dial(ctx, url, nil)
		cancel()
		if err != nil {
			t.Fatalf("handshake %d: %v", i, err)
		}
		defer c.Close()
	}
}

// TestShutdownDuringUpgrade: a client whose upgrade is under way when
// Shutdown begins (its handshake passed the shutdown check, then waited in
// OnHandshake) gets its 1001 like the others, and Shutdown returns well
// before its deadline. Such a client used to be registered after the
// writers had closed everyone: it never got the close, and Shutdown waited
// out its whole deadline.
func TestShutdownDuringUpgrade(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	var srv *engine.Server
	app.handshake = func(r *http.Request) (any, error) {
		deadline := time.Now().Add(10 * time.Second)
		for !srv.Draining() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		return nil, nil
	}
	srv, url := start(t, engine.Config{}, app)
	dialed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := wstest.Dial(ctx, url, nil)
		if err != nil {
			dialed <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		ce, err := c.ExpectClose()
		if err == nil && ce.Code != 1001 {
			err = fmt.Errorf("closed with %d", ce.Code)
		}
		dialed <- err
	}()
	app.next(t, "handshake")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	begin := time.Now()
	if err := srv.Shutdown(ctx); err != nil || time.Since(begin) > 5*time.Second {
		t.Fatalf("Shutdown took %v: %v", time.Since(begin), err)
	}
	if err := <-dialed; err != nil {
		t.Fatalf("the client upgraded during shutdown: %v, want a 1001", err)
	}
}

// TestStartAfterShutdown: a shut-down server is not reusable, and says so
// with ErrServerClosed, as its doc promises.
func TestStartAfterShutdown(t *testing.T) {
	t.Parallel()
	srv, err := engine.New(engine.Config{Addr: "127.0.0.1:0", Logger: testLoggerFor(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); !errors.Is(err, engine.ErrServerClosed) {
		t.Fatalf("Start after Shutdown: %v, want ErrServerClosed", err)
	}
	never, err := engine.New(engine.Config{Addr: "127.0.0.1:0", Logger: testLoggerFor(t)})
	if err != nil {
		t.Fatal(err)
	}
	_ = never.Close()
	if err := never.Start(); !errors.Is(err, engine.ErrServerClosed) {
		t.Fatalf("Start after Close: %v, want ErrServerClosed", err)
	}
}
