package engine_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/wsproto"
)

// TestEchoEndpoint: the conformance endpoint echoes every message with its
// type, up to its own 16 MiB limit, while the server's default stays small.
func TestEchoEndpoint(t *testing.T) {
	t.Parallel()
	srv, chatURL := start(t, engine.Config{}, newRecorder(), func(s *engine.Server) {
		if _, err := s.MountWith("/echo", &engine.Echo{}, &engine.MountOptions{MaxMessageSize: 16 << 20}); err != nil {
			t.Fatal(err)
		}
	})
	url := "ws://" + srv.Addr().String() + "/echo"
	c := dial(t, url, nil)
	key := [4]byte{1, 2, 3, 4}
	huge := bytes.Repeat([]byte("é"), 8<<20) // 16 MiB of valid UTF-8
	for _, tc := range []struct {
		name string
		op   wsproto.Opcode
		send func() error
		want []byte
	}{
		{"16 MiB text", wsproto.OpText, func() error { return c.WriteFrame(wsproto.OpText, true, huge) }, huge},
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
	cc := dial(t, chatURL, nil)
	if err := cc.WriteFrame(wsproto.OpBinary, true, make([]byte, 65<<10)); err != nil {
		t.Fatal(err)
	}
	if ce, err := cc.ExpectClose(); err != nil || ce.Code != 1009 {
		t.Fatalf("65 KiB on the default endpoint: %+v, %v", ce, err)
	}
}
