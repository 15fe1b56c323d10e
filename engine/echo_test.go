package engine_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/internal/wsproto"
	"github.com/parleyhq/parley/internal/wstest"
)

// TestEchoEndpoint: the conformance endpoint echoes every message with its
// type, up to its own 16 MiB limit, while the server's default stays small;
// called on the executor and Inline (as parley serve mounts it), over TCP
// and TLS.
func TestEchoEndpoint(t *testing.T) {
	t.Parallel()
	for _, inline := range []bool{false, true} {
		for _, secure := range []bool{false, true} {
			t.Run(fmt.Sprintf("inline=%v/tls=%v", inline, secure), func(t *testing.T) {
				t.Parallel()
				testEcho(t, inline, secure)
			})
		}
	}
}

func testEcho(t *testing.T, inline, secure bool) {
	var cfg engine.Config
	var tlsCfg *tls.Config
	if secure {
		certFile, keyFile, _, pool := testserver.SelfSigned(t)
		cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
		tlsCfg = &tls.Config{RootCAs: pool}
	}
	srv, chatURL := start(t, cfg, newRecorder(), func(s *engine.Server) {
		if _, err := s.MountWith("/echo", &engine.Echo{}, &engine.MountOptions{MaxMessageSize: 16 << 20, Inline: inline}); err != nil {
			t.Fatal(err)
		}
	})
	dialer := func(url string) *wstest.Conn {
		if !secure {
			return dial(t, url, nil)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := wstest.DialTLS(ctx, tlsCfg, strings.Replace(url, "ws://", "wss://", 1), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	url := "ws://" + srv.Addr().String() + "/echo"
	c := dialer(url)
	key := [4]byte{1, 2, 3, 4}
	huge := bytes.Repeat([]byte("é"), 8<<20) // 16 MiB of valid UTF-8
	if secure {
		huge = huge[:4<<20] // over TLS under -race, 16 MiB takes a while: the limit is checked in the clear
	}
	for _, tc := range []struct {
		name string
		op   wsproto.Opcode
		send func() error
		want []byte
	}{
		{"largest text", wsproto.OpText, func() error { return c.WriteFrame(wsproto.OpText, true, huge) }, huge},
		{"1 MiB binary", wsproto.OpBinary, func() error { return c.WriteFrame(wsproto.OpBinary, true, huge[:1<<20]) }, huge[:1<<20]},
		{"empty text", wsproto.OpText, func() error { return c.WriteFrame(wsproto.OpText, true, nil) }, []byte{}},
		{"empty binary", wsproto.OpBinary, func() error { return c.WriteFrame(wsproto.OpBinary, true, nil) }, []byte{}},
		{"fragments", wsproto.OpBinary, func() error {
			b := wsproto.AppendMaskedFrame(nil, wsproto.OpBinary, false, []byte("ab"), key)
			b = wsproto.AppendMaskedFrame(b, wsproto.OpContinuation, false, nil, key)
			b = wsproto.AppendMaskedFrame(b, wsproto.OpContinuation, true, []byte("c"), key)
			return c.WriteRaw(b)
		}, []byte("abc")},
	} {
		// A deadline per step: 16 MiB under a loaded -race run takes a while.
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		if err := tc.send(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		op, got, err := c.ReadMessage()
		if err != nil || op != tc.op || !bytes.Equal(got, tc.want) {
			t.Fatalf("%s: echo %v of %d bytes, %v", tc.name, op, len(got), err)
		}
	}
	// One byte over the endpoint's limit: 1009.
	if err := c.WriteFrame(wsproto.OpBinary, true, make([]byte, 16<<20+1)); err != nil {
		t.Fatal(err)
	}
	if ce, err := c.ExpectClose(); err != nil || ce.Code != 1009 {
		t.Fatalf("over the limit: %+v, %v", ce, err)
	}
	// The chat endpoint keeps the server's default limit (64 KiB).
	cc := dialer(chatURL)
	_ = cc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := cc.WriteFrame(wsproto.OpBinary, true, make([]byte, 65<<10)); err != nil {
		t.Fatal(err)
	}
	if ce, err := cc.ExpectClose(); err != nil || ce.Code != 1009 {
		t.Fatalf("65 KiB on the default endpoint: %+v, %v", ce, err)
	}
}

// TestInline: an Inline endpoint calls OnMessage on the poller that read
// the message, never before OnOpen has returned, and in order: pipelined
// messages read at once are answered in the order sent.
func TestInline(t *testing.T) {
	t.Parallel()
	opened := make(chan struct{})
	var openReturned atomic.Bool
	var onPoller, offPoller atomic.Int64
	app := newRecorder()
	app.onMessage = func(ep *engine.Endpoint, id engine.ClientID, typ engine.MessageType, data []byte) {
		if !openReturned.Load() {
			t.Errorf("OnMessage(%q) before OnOpen returned", data)
		}
		// nbio's poller goroutines run (*poller).start; executor jobs do not.
		buf := make([]byte, 64<<10)
		if strings.Contains(string(buf[:runtime.Stack(buf, false)]), "nbio.(*poller)") {
			onPoller.Add(1)
		} else {
			offPoller.Add(1)
		}
		_ = ep.Send(id, typ, data)
	}
	app.open = func(engine.ClientID) {
		<-opened // the client's first message arrives meanwhile
		openReturned.Store(true)
	}
	srv, _ := start(t, engine.Config{}, newRecorder(), func(s *engine.Server) {
		if _, err := s.MountWith("/inline", app, &engine.MountOptions{Inline: true}); err != nil {
			t.Fatal(err)
		}
	})
	c := dial(t, "ws://"+srv.Addr().String()+"/inline", nil)
	if err := c.WriteText("first"); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, 5*time.Second, "the first message to be read", func() bool { return srv.Stats().MessagesRead == 1 })
	close(opened)
	if got, err := c.ReadText(); err != nil || got != "first" {
		t.Fatalf("got %q, %v", got, err)
	}
	// The echo goes out before OnMessage returns: until the executor's job
	// is done, what arrives next must still queue behind it (a busy machine
	// showed it: all 1,000 went to the executor, rightly).
	poll.Within(t, 5*time.Second, "the first message handled", func() bool { return srv.Stats().PendingInput == 0 })
	// It waited for OnOpen on the executor: from now on, on the poller.
	const n = 1000
	var batch []byte
	for i := range n {
		batch = wsproto.AppendMaskedFrame(batch, wsproto.OpText, true, fmt.Appendf(nil, "m%d", i), [4]byte{1, 2, 3, 4})
	}
	if err := c.WriteRaw(batch); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if got, err := c.ReadText(); err != nil || got != fmt.Sprintf("m%d", i) {
			t.Fatalf("echo %d: %q, %v", i, got, err)
		}
	}
	if on, off := onPoller.Load(), offPoller.Load(); on != n || off != 1 {
		t.Fatalf("OnMessage ran %d times on a poller and %d off it, want %d and 1", on, off, n)
	}
}
