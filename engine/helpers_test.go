package engine_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/internal/wstest"
)

// start runs a server for cfg on 127.0.0.1:0 with app mounted on /ws,
// shut down when the test ends. It returns the server and its ws:// URL.
func start(t testing.TB, cfg engine.Config, app engine.Application, setup ...func(*engine.Server)) (*engine.Server, string) {
	t.Helper()
	return testserver.Start(t, cfg, app, setup...)
}

func dial(t testing.TB, url string, hdr http.Header) *wstest.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := wstest.Dial(ctx, url, hdr)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// rawHTTP sends req (a whole HTTP/1.1 request) to addr and returns the
// response with its body read.
func rawHTTP(t testing.TB, addr, req string) (*http.Response, string) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	method := strings.SplitN(req, " ", 2)[0]
	resp, err := http.ReadResponse(bufio.NewReader(nc), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response to %q: %v", strings.SplitN(req, "\r\n", 2)[0], err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// event is one application callback, as recorded.
type event struct {
	kind   string // start, handshake, open, message, close, stop
	id     engine.ClientID
	data   any
	typ    engine.MessageType
	msg    string
	code   engine.StatusCode
	reason string
}

// recorder is an Application that records every callback.
type recorder struct {
	mu        sync.Mutex
	ep        *engine.Endpoint
	events    chan event
	handshake func(*http.Request) (any, error)
	onMessage func(ep *engine.Endpoint, id engine.ClientID, typ engine.MessageType, data []byte)
	open      func(id engine.ClientID) // called by OnOpen before it records the event
}

func newRecorder() *recorder { return &recorder{events: make(chan event, 100000)} }

func (r *recorder) OnStart(ep *engine.Endpoint) error {
	r.mu.Lock()
	r.ep = ep
	r.mu.Unlock()
	r.events <- event{kind: "start"}
	return nil
}

func (r *recorder) OnHandshake(req *http.Request) (any, error) {
	r.events <- event{kind: "handshake"}
	if r.handshake != nil {
		return r.handshake(req)
	}
	return req.RemoteAddr, nil
}

func (r *recorder) OnOpen(id engine.ClientID, data any) {
	if r.open != nil {
		r.open(id)
	}
	r.events <- event{kind: "open", id: id, data: data}
}

func (r *recorder) OnMessage(id engine.ClientID, typ engine.MessageType, data []byte) {
	r.events <- event{kind: "message", id: id, typ: typ, msg: string(data)}
	if r.onMessage != nil {
		r.onMessage(r.endpoint(), id, typ, data)
	}
}

func (r *recorder) OnClose(id engine.ClientID, code engine.StatusCode, reason string) {
	r.events <- event{kind: "close", id: id, code: code, reason: reason}
}

func (r *recorder) OnStop() { r.events <- event{kind: "stop"} }

func (r *recorder) endpoint() *engine.Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ep
}

// next waits for the next event of kind (skipping others if skip is set).
func (r *recorder) next(t testing.TB, kind string) event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-r.events:
			if e.kind == kind {
				return e
			}
		case <-timeout:
			t.Fatalf("no %q event within 10s", kind)
		}
	}
}

// expect waits for the next event and checks its kind.
func (r *recorder) expect(t testing.TB, kind string) event {
	t.Helper()
	select {
	case e := <-r.events:
		if e.kind != kind {
			t.Fatalf("event %q (%+v), want %q", e.kind, e, kind)
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q event within 10s", kind)
	}
	return event{}
}

// testLoggerFor returns the quiet test logger.
func testLoggerFor(testing.TB) *slog.Logger { return testserver.Logger() }
