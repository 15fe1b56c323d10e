package engine_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wsproto"
	"github.com/parleyhq/parley/internal/wstest"
)

func TestLifecycleOrder(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	srv, url := start(t, engine.Config{}, app)
	app.expect(t, "start")

	c := dial(t, url, nil)
	app.expect(t, "handshake")
	open := app.expect(t, "open")
	if got, ok := open.data.(string); !ok || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("OnOpen data = %#v, want the handshake's remote address", open.data)
	}
	for i := range 3 {
		if err := c.WriteText(fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WriteFrame(wsproto.OpBinary, true, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e := app.expect(t, "message")
		if e.id != open.id || e.msg != fmt.Sprintf("m%d", i) || e.typ != engine.Text {
			t.Fatalf("message %d = %+v", i, e)
		}
	}
	if e := app.expect(t, "message"); e.typ != engine.Binary || e.msg != "\x00\x01\x02" {
		t.Fatalf("binary message = %+v", e)
	}
	if err := c.WriteClose(4001, "bye"); err != nil {
		t.Fatal(err)
	}
	// The server echoes the close code, then drops the connection.
	ce, err := c.ExpectClose()
	if err != nil || ce.Code != 4001 {
		t.Fatalf("close echo = %v, %v; want 4001", ce, err)
	}
	e := app.expect(t, "close")
	if e.id != open.id || e.code != 4001 || e.reason != "bye" {
		t.Fatalf("OnClose = %+v, want id %d code 4001 reason bye", e, open.id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	app.expect(t, "stop")
}

func TestHandshakeRefusedByApp(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	app.handshake = func(r *http.Request) (any, error) {
		if r.URL.Query().Get("token") != "secret" {
			return nil, &engine.HTTPError{Status: http.StatusUnauthorized, Body: "no token"}
		}
		return "welcome", nil
	}
	_, url := start(t, engine.Config{}, app)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := wstest.Dial(ctx, url, nil)
	if !errors.Is(err, wstest.ErrBadHandshake) || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dial without token: %v", err)
	}
	// A body without a Content-Type of its own is plain text, never HTML.
	if ct, nosniff := resp.Header.Get("Content-Type"), resp.Header.Get("X-Content-Type-Options"); ct != "text/plain; charset=utf-8" || nosniff != "nosniff" {
		t.Fatalf("refusal sent as %q (X-Content-Type-Options %q), want text/plain with nosniff", ct, nosniff)
	}
	dial(t, url+"?token=secret", nil)
	if e := app.next(t, "open"); e.data != "welcome" {
		t.Fatalf("OnOpen data = %#v, want \"welcome\"", e.data)
	}
}

// connect dials n clients and returns them with their ids, in order.
func connect(t *testing.T, app *recorder, url string, n int) ([]*wstest.Conn, []engine.ClientID) {
	t.Helper()
	conns := make([]*wstest.Conn, n)
	ids := make([]engine.ClientID, n)
	for i := range n {
		conns[i] = dial(t, url, nil)
		ids[i] = app.next(t, "open").id
	}
	return conns, ids
}

func TestSendAPI(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	_, url := start(t, engine.Config{Writers: 3}, app)
	conns, ids := connect(t, app, url, 4)
	ep := app.endpoint()

	if err := ep.Send(ids[0], engine.Text, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if n, err := ep.Multicast([]engine.ClientID{ids[1], ids[2], ids[2], 999999}, engine.Text, []byte("list")); err != nil || n != 3 {
		t.Fatalf("Multicast = %d, %v; want 3 (a repeated id counts, an unknown one does not)", n, err)
	}
	if n, err := ep.Broadcast(engine.Text, []byte("all")); err != nil || n != 4 {
		t.Fatalf("Broadcast = %d, %v; want 4", n, err)
	}
	if _, err := ep.Broadcast(engine.Binary, []byte("but"), ids[1], ids[3]); err != nil {
		t.Fatal(err)
	}
	if err := ep.Send(ids[3], engine.Text, []byte("last")); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"one", "all", "but"},
		{"list", "all"},
		{"list", "all", "but"}, // listed twice, delivered once
		{"all", "last"},
	}
	for i, c := range conns {
		for _, w := range want[i] {
			if got, err := c.ReadText(); err != nil || got != w {
				t.Fatalf("client %d: got %q, %v; want %q", i, got, err, w)
			}
		}
	}
	// Nothing else arrives: a marker sent last is the next message.
	for i, c := range conns {
		_ = ep.Send(ids[i], engine.Text, []byte("end"))
		if got, err := c.ReadText(); err != nil || got != "end" {
			t.Fatalf("client %d: extra message %q, %v", i, got, err)
		}
	}

	if err := ep.Send(999999, engine.Text, []byte("x")); !errors.Is(err, engine.ErrUnknownClient) {
		t.Fatalf("Send to unknown id: %v, want ErrUnknownClient", err)
	}
	if err := ep.Send(ids[0], engine.Text, []byte{0xff}); !errors.Is(err, engine.ErrInvalidUTF8) {
		t.Fatalf("Send of invalid UTF-8: %v, want ErrInvalidUTF8", err)
	}
	if err := ep.Send(ids[0], engine.MessageType(7), nil); !errors.Is(err, engine.ErrInvalidMessageType) {
		t.Fatalf("Send of type 7: %v, want ErrInvalidMessageType", err)
	}
	// A closed client is unknown from its OnClose on.
	conns[0].Close()
	if e := app.next(t, "close"); e.id != ids[0] || e.code != engine.StatusAbnormalClosure {
		t.Fatalf("OnClose = %+v, want id %d with 1006", e, ids[0])
	}
	if err := ep.Send(ids[0], engine.Text, []byte("late")); !errors.Is(err, engine.ErrUnknownClient) {
		t.Fatalf("Send to a closed client: %v, want ErrUnknownClient", err)
	}
	if got := ep.Clients(); len(got) != 3 || got[0] != ids[1] {
		t.Fatalf("Clients = %v, want %v", got, ids[1:])
	}
}

func TestEndpointClose(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	_, url := start(t, engine.Config{}, app)
	conns, ids := connect(t, app, url, 1)
	ep := app.endpoint()
	if err := ep.Send(ids[0], engine.Text, []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := ep.Close(ids[0], 4002, "kicked"); err != nil {
		t.Fatal(err)
	}
	if err := ep.Send(ids[0], engine.Text, []byte("after")); !errors.Is(err, engine.ErrClientClosing) {
		t.Fatalf("Send after Close: %v, want ErrClientClosing", err)
	}
	if err := ep.Close(ids[0], 1005, ""); !errors.Is(err, engine.ErrInvalidCloseCode) {
		t.Fatalf("Close with 1005: %v, want ErrInvalidCloseCode", err)
	}
	if got, err := conns[0].ReadText(); got != "before" || err != nil {
		t.Fatalf("got %q, %v; want the message queued before the close", got, err)
	}
	ce, err := conns[0].ExpectClose()
	if err != nil || ce.Code != 4002 || ce.Reason != "kicked" {
		t.Fatalf("close frame = %+v, %v", ce, err)
	}
	if err := conns[0].WriteClose(ce.Code, ""); err != nil {
		t.Fatal(err)
	}
	if e := app.next(t, "close"); e.code != 4002 || e.reason != "kicked" {
		t.Fatalf("OnClose = %+v, want 4002 kicked", e)
	}
}

func TestClientInfo(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	_, url := start(t, engine.Config{}, app)
	conns, ids := connect(t, app, url, 1)
	ep := app.endpoint()
	before := time.Now()
	for range 2 {
		if err := conns[0].WriteText("hello"); err != nil { // 2 + 4 (mask) + 5 bytes
			t.Fatal(err)
		}
		app.next(t, "message")
	}
	if err := ep.Send(ids[0], engine.Text, []byte("hi")); err != nil { // 2 + 2 bytes
		t.Fatal(err)
	}
	if _, err := conns[0].ReadText(); err != nil {
		t.Fatal(err)
	}
	var info engine.ClientInfo
	poll.Within(t, 5*time.Second, "the write to be counted", func() bool {
		info, _ = ep.Info(ids[0])
		return info.BytesOut == 4
	})
	want := engine.ClientInfo{
		ID: ids[0], RemoteAddr: info.RemoteAddr,
		BytesIn: 22, FramesIn: 2, MessagesIn: 2,
		BytesOut: 4, FramesOut: 1, MessagesOut: 1,
		ConnectedAt: info.ConnectedAt, LastReadAt: info.LastReadAt, LastWriteAt: info.LastWriteAt,
	}
	if info != want {
		t.Fatalf("Info =\n%+v\nwant\n%+v", info, want)
	}
	if info.ConnectedAt.After(before) || info.LastReadAt.Before(before) || info.LastWriteAt.Before(info.LastReadAt) {
		t.Fatalf("times: connected %v, last read %v, last write %v (test began sending at %v)",
			info.ConnectedAt, info.LastReadAt, info.LastWriteAt, before)
	}
	if _, err := ep.Info(123456); !errors.Is(err, engine.ErrUnknownClient) {
		t.Fatalf("Info of unknown id: %v", err)
	}
	// Addr is RemoteAddr parsed.
	ap, err := ep.Addr(ids[0])
	if err != nil || ap != netip.MustParseAddrPort(info.RemoteAddr) {
		t.Fatalf("Addr = %v, %v; want %s", ap, err, info.RemoteAddr)
	}
	if _, err := ep.Addr(123456); !errors.Is(err, engine.ErrUnknownClient) {
		t.Fatalf("Addr of unknown id: %v", err)
	}
}

// TestAddrAllocatesNothing: the chat asks a guest's address per message
// (its message ids are keyed by it); Info's RemoteAddr is a string made
// when asked, Addr is not.
func TestAddrAllocatesNothing(t *testing.T) {
	app := newRecorder()
	_, url := start(t, engine.Config{}, app)
	_, ids := connect(t, app, url, 1)
	ep := app.endpoint()
	if n := testing.AllocsPerRun(100, func() { _, _ = ep.Addr(ids[0]) }); n != 0 {
		t.Fatalf("Addr allocates %v times per call", n)
	}
}

func TestOrigin(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	srv, url := start(t, engine.Config{AllowedOrigins: []string{"https://chat.example.com"}}, app)
	host := srv.Addr().String()
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},               // not a browser
		{"http://" + host, true}, // same origin
		{"HTTP://" + strings.ToUpper(host), true},   // case-insensitive
		{"https://chat.example.com", true},          // allow-listed
		{"https://CHAT.example.com/", true},         // normalized
		{"https://chat.example.com:443", true},      // the default port, spelled out
		{"https://evil.example.com", false},         // foreign
		{"http://localhost:1337", false},            // another port
		{"null", false},                             // sandboxed page
		{"https://" + host, false},                  // own host and port, another scheme
		{"http://chat.example.com", false},          // allow-listed host, another scheme
		{"https://chat.example.com:8443", false},    // allow-listed host, another port
		{"ws://" + host, false},                     // not a page's origin
		{"http://" + host + "/path", false},         // not an origin
		{"http://" + host + ".evil.example", false}, // a host that starts like ours
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, resp, err := wstest.Dial(ctx, url, http.Header{"Origin": {tc.origin}})
		cancel()
		if tc.ok {
			if err != nil {
				t.Errorf("origin %q refused: %v", tc.origin, err)
				continue
			}
			c.Close()
			continue
		}
		if !errors.Is(err, wstest.ErrBadHandshake) || resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %q: %v, want 403", tc.origin, err)
			continue
		}
		buf := new(strings.Builder)
		_, _ = fmt.Fprint(buf, readBody(resp))
		if buf.String() != "<h1>origin not allowed</h1>" {
			t.Errorf("origin %q: body %q", tc.origin, buf.String())
		}
	}
	if got := srv.Stats().RefusedOrigin; got != 9 {
		t.Errorf("Stats.RefusedOrigin = %d, want 9", got)
	}
}

// TestOriginHost: the server's own origin is taken from the Host header
// only when that host cannot be rebound: an IP address, localhost, or the
// host name it listens on. A page of rebind.evil.example whose name the
// attacker pointed at the server (DNS rebinding) sends Host and Origin
// alike: it used to get 101. Two Origin headers are refused.
func TestOriginHost(t *testing.T) {
	t.Parallel()
	srv, url := start(t, engine.Config{AllowedOrigins: []string{"https://chat.example.com"}}, newRecorder())
	_, port, _ := net.SplitHostPort(srv.Addr().String())
	for _, tc := range []struct {
		name    string
		host    string
		origins []string
		ok      bool
	}{
		{"an IP address", "127.0.0.1:" + port, []string{"http://127.0.0.1:" + port}, true},
		{"an IPv6 address", "[::1]:" + port, []string{"http://[::1]:" + port}, true},
		{"localhost", "localhost:" + port, []string{"http://localhost:" + port}, true},
		{"a name under localhost", "app.localhost:" + port, []string{"http://app.localhost:" + port}, true},
		{"an allow-listed origin, whatever the Host", "chat.example.com", []string{"https://chat.example.com"}, true},
		{"no Origin: not a browser", "rebind.evil.example:" + port, nil, true},
		{"DNS rebinding", "rebind.evil.example:" + port, []string{"http://rebind.evil.example:" + port}, false},
		{"a name that looks local", "localhost.evil.example:" + port, []string{"http://localhost.evil.example:" + port}, false},
		{"two Origins, both ours", "127.0.0.1:" + port, []string{"http://127.0.0.1:" + port, "http://127.0.0.1:" + port}, false},
		{"two Origins, one foreign", "127.0.0.1:" + port, []string{"http://127.0.0.1:" + port, "https://evil.example"}, false},
	} {
		hdr := http.Header{"Host": {tc.host}}
		if tc.origins != nil {
			hdr["Origin"] = tc.origins
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, resp, err := wstest.Dial(ctx, url, hdr)
		cancel()
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.ok:
			c.Close()
		case !errors.Is(err, wstest.ErrBadHandshake) || resp.StatusCode != http.StatusForbidden:
			t.Errorf("%s: %v, want 403", tc.name, err)
		}
	}
}

func readBody(resp *http.Response) string {
	b := new(strings.Builder)
	buf := make([]byte, 512)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

func TestMalformedUpgrade(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	srv, _ := start(t, engine.Config{}, app)
	addr := srv.Addr().String()
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	good := map[string]string{
		"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13",
	}
	build := func(method string, drop string, set map[string]string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "%s /ws HTTP/1.1\r\nHost: %s\r\n", method, addr)
		for k, v := range good {
			if k == drop {
				continue
			}
			if nv, ok := set[k]; ok {
				v = nv
			}
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
		b.WriteString("Content-Length: 0\r\n\r\n")
		return b.String()
	}
	for _, tc := range []struct {
		name       string
		req        string
		status     int
		header     string
		headerWant string
	}{
		{"POST", build("POST", "", nil), 405, "Allow", "GET"},
		{"no Upgrade", build("GET", "Upgrade", nil), 426, "Upgrade", "websocket"},
		{"Upgrade: h2c", build("GET", "", map[string]string{"Upgrade": "h2c"}), 426, "Upgrade", "websocket"},
		{"no Connection token", build("GET", "", map[string]string{"Connection": "keep-alive"}), 426, "Upgrade", "websocket"},
		{"no key", build("GET", "Sec-WebSocket-Key", nil), 400, "", ""},
		{"short key", build("GET", "", map[string]string{"Sec-WebSocket-Key": "abc"}), 400, "", ""},
		{"version 8", build("GET", "", map[string]string{"Sec-WebSocket-Version": "8"}), 400, "Sec-WebSocket-Version", "13"},
		{"no version", build("GET", "Sec-WebSocket-Version", nil), 400, "Sec-WebSocket-Version", "13"},
		{"Firefox Connection list", build("GET", "", map[string]string{"Connection": "keep-alive, Upgrade"}), 101, "", ""},
		{"a body", strings.Replace(build("GET", "", nil), "Content-Length: 0\r\n\r\n", "Content-Length: 5\r\n\r\nhello", 1), 400, "", ""},
		{"HTTP/1.0", strings.Replace(build("GET", "", nil), "HTTP/1.1", "HTTP/1.0", 1), 400, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := rawHTTP(t, addr, tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.header != "" && resp.Header.Get(tc.header) != tc.headerWant {
				t.Fatalf("%s: %q, want %q", tc.header, resp.Header.Get(tc.header), tc.headerWant)
			}
		})
	}
}

// A client that has its 101 receives every broadcast sent after that, even
// before the application has seen its OnOpen.
func TestNoBroadcastMissedAfterUpgrade(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	_, url := start(t, engine.Config{Writers: 2}, app)
	first := dial(t, url, nil)
	app.next(t, "open")
	ep := app.endpoint()
	for i := range 50 {
		c := dial(t, url, nil) // returns once the 101 arrived
		msg := fmt.Sprintf("b%d", i)
		if _, err := ep.Broadcast(engine.Text, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if got, err := c.ReadText(); err != nil || got != msg {
			t.Fatalf("client %d: got %q, %v; want %q", i, got, err, msg)
		}
		c.Close()
		if got, err := first.ReadText(); err != nil || got != msg {
			t.Fatalf("first client: got %q, %v", got, err)
		}
	}
}
