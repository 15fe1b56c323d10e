package engine_test

import (
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/wsproto"
)

// Autobahn|Testsuite cases the engine once answered NON-STRICT or left
// hanging, reproduced over a raw client against the echo application.

var confKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

func masked(op wsproto.Opcode, fin bool, p string) []byte {
	return wsproto.AppendMaskedFrame(nil, op, fin, []byte(p), confKey)
}

// TestEchoBeforeProtocolError (3.2-3.4, 4.1.3-4.1.5, 4.2.3-4.2.5, 5.15): a
// valid message and a bad frame in one write: the message is echoed, then
// the connection is closed with 1002.
func TestEchoBeforeProtocolError(t *testing.T) {
	t.Parallel()
	_, url := start(t, engine.Config{}, &engine.Echo{})
	rsv := func(b []byte) []byte { b[0] |= 0x20; return b }
	for _, tc := range []struct {
		name string
		bad  []byte
	}{
		{"3.2 RSV2 set", rsv(masked(wsproto.OpText, true, "x"))},
		{"3.3 RSV1 and RSV2 set", func() []byte { b := masked(wsproto.OpText, true, "x"); b[0] |= 0x60; return b }()},
		{"3.4 RSV set on a ping", rsv(masked(wsproto.OpPing, true, ""))},
		{"4.1.3 reserved data opcode 5", masked(wsproto.Opcode(5), true, "")},
		{"4.1.4 reserved data opcode 6 with a payload", masked(wsproto.Opcode(6), true, "reserved opcode")},
		{"4.1.5 reserved data opcode 7, unfinished", masked(wsproto.Opcode(7), false, "reserved opcode")},
		{"4.2.3 reserved control opcode 13", masked(wsproto.Opcode(13), true, "")},
		{"4.2.4 reserved control opcode 14 with a payload", masked(wsproto.Opcode(14), true, "reserved opcode")},
		{"4.2.5 reserved control opcode 15, unfinished", masked(wsproto.Opcode(15), false, "reserved opcode")},
		{"5.15 a continuation after the message's end", masked(wsproto.OpContinuation, true, "fragment4")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dial(t, url, nil)
			b := append(masked(wsproto.OpText, true, "Hello, world!"), tc.bad...)
			if err := c.WriteRaw(b); err != nil {
				t.Fatal(err)
			}
			op, msg, err := c.ReadMessage()
			if err != nil || op != wsproto.OpText || string(msg) != "Hello, world!" {
				t.Fatalf("got %v %q %v, want the echo before the close", op, msg, err)
			}
			if ce, err := c.ExpectClose(); err != nil || ce.Code != 1002 {
				t.Fatalf("close %+v, %v; want 1002", ce, err)
			}
		})
	}
}

// TestUTF8FailsFast (6.4.1-6.4.4): invalid UTF-8 in a text message closes
// with 1007 as soon as the bytes that make it invalid arrive, without
// waiting for the rest of the frame or of the message; the client's close
// frame that answers it (sent, as Autobahn does, in the middle of its
// unfinished frame) ends the connection at once, not after CloseTimeout
// (it used to be read as the rest of the broken frame).
func TestUTF8FailsFast(t *testing.T) {
	t.Parallel()
	_, url := start(t, engine.Config{CloseTimeout: 10 * time.Minute}, &engine.Echo{})
	// κόσμε, then an invalid sequence (F4 90 80 80: above U+10FFFF), then
	// more that never comes.
	good := "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
	for _, tc := range []struct {
		name  string
		sends [][]byte
	}{
		{"6.4.1 in a fragment, the message unfinished", [][]byte{
			masked(wsproto.OpText, false, good),
			masked(wsproto.OpContinuation, false, "\xf4\x90\x80\x80"),
		}},
		{"6.4.2 the first byte of a fragment", [][]byte{
			masked(wsproto.OpText, false, good+"\xf4"),
			masked(wsproto.OpContinuation, false, "\x90"),
		}},
		{"6.4.3 in the bytes of an unfinished frame", func() [][]byte {
			f := masked(wsproto.OpText, true, good+"\xf4\x90\x80\x80"+strings.Repeat("a", 1000))
			return [][]byte{f[:8+len(good)+4]} // header (2+2+4), the good text, the bad bytes
		}()},
		{"6.4.4 a lead byte no sequence starts with", func() [][]byte {
			f := masked(wsproto.OpText, true, good+"\xf8"+strings.Repeat("a", 1000))
			return [][]byte{f[:8+len(good)+1]}
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dial(t, url, nil)
			for _, b := range tc.sends {
				if err := c.WriteRaw(b); err != nil {
					t.Fatal(err)
				}
			}
			if ce, err := c.ExpectClose(); err != nil || ce.Code != 1007 {
				t.Fatalf("close %+v, %v; want 1007 before the message ends", ce, err)
			}
			if err := c.WriteClose(1007, ""); err != nil {
				t.Fatal(err)
			}
			// The server drops the socket: far sooner than its CloseTimeout.
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			if n, err := io.Copy(io.Discard, c.NetConn()); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("after the close frames: %d bytes, %v; want the socket closed", n, err)
			}
		})
	}
	// Valid text split anywhere, even inside a character, is fine.
	c := dial(t, url, nil)
	msg := good + "\xf0\x9f\x98\x80" + good
	for i := 1; i < len(msg); i += 3 {
		op := wsproto.OpContinuation
		if i == 1 {
			op = wsproto.OpText
		}
		end := min(i+3, len(msg))
		_ = c.WriteRaw(masked(op, false, msg[i-1:end-1]))
		if end == len(msg) {
			_ = c.WriteRaw(masked(wsproto.OpContinuation, true, msg[end-1:]))
		}
	}
	if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
		t.Fatalf("valid text in 3-byte fragments: %q, %v", got, err)
	}
}

// TestBadCloseDropsAtOnce (7.3.2, 7.3.6, 7.5.1, 7.9.x, 7.13.x): a close frame
// the server refuses is the peer's close all the same: once the server's
// 1002 or 1007 is written, the connection is dropped, not held for the
// close timeout.
func TestBadCloseDropsAtOnce(t *testing.T) {
	t.Parallel()
	_, url := start(t, engine.Config{CloseTimeout: 10 * time.Second}, &engine.Echo{})
	for _, tc := range []struct {
		name    string
		payload string
		code    int
	}{
		{"7.3.2 a one-byte payload", "\x03", 1002},
		{"7.3.6 a reason past 123 bytes", "\x03\xe8" + strings.Repeat("*", 124), 1002},
		{"7.5.1 a reason not UTF-8", "\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64", 1007},
		{"7.9.1 code 0", "\x00\x00", 1002},
		{"7.9.5 code 1005", "\x03\xed", 1002},
		{"7.9.9 code 1016", "\x03\xf8", 1002},
		{"7.9.2 code 999", "\x03\xe7", 1002},
		{"7.9.3 code 1004", "\x03\xec", 1002},
		{"7.9.4 code 1006", "\x03\xee", 1002},
		{"7.13.x code 2999", "\x0b\xb7", 1002},
		{"7.13.1 code 5000", "\x13\x88", 1002},
		{"7.13.2 code 65535", "\xff\xff", 1002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dial(t, url, nil)
			p := []byte(tc.payload)
			var b []byte
			if len(p) > wsproto.MaxControlPayload {
				b = wsproto.AppendMaskedFrame(nil, wsproto.OpClose, true, p[:wsproto.MaxControlPayload], confKey)
				b[1] = 0x80 | 126 // a length past 125: rewrite as a 16-bit length
				b = append(b[:2], append([]byte{0, byte(len(p))}, append(confKey[:], maskBytes(p)...)...)...)
			} else {
				b = wsproto.AppendMaskedFrame(nil, wsproto.OpClose, true, p, confKey)
			}
			if err := c.WriteRaw(b); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			ce, err := c.ExpectClose()
			if err != nil || ce.Code != tc.code {
				t.Fatalf("close %+v, %v; want %d", ce, err, tc.code)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.NetConn().Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("after the server's close: %v, want the connection dropped", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("dropped after %v: held for the close timeout", d)
			}
		})
	}
}

func maskBytes(p []byte) []byte {
	out := append([]byte(nil), p...)
	wsproto.Mask(out, confKey, 0)
	return out
}
