package engine_test

import (
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wsproto"
	"github.com/parleyhq/parley/internal/wstest"
)

// The other side of these tests is Go's compress/flate: a second
// implementation of deflate, against the server's klauspost/compress.

// deflateClient compresses as a permessage-deflate client, with context
// takeover (one writer across messages) or without.
type deflateClient struct {
	takeover bool
	buf      bytes.Buffer
	w        *flate.Writer
}

// compress returns a message's compressed bytes, without the trailing
// 00 00 ff ff.
func (d *deflateClient) compress(t testing.TB, msg []byte) []byte {
	t.Helper()
	d.buf.Reset()
	if d.w == nil || !d.takeover {
		d.w, _ = flate.NewWriter(&d.buf, flate.BestCompression)
	}
	if _, err := d.w.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := d.w.Flush(); err != nil {
		t.Fatal(err)
	}
	b := d.buf.Bytes()
	if !bytes.HasSuffix(b, []byte{0, 0, 0xff, 0xff}) {
		t.Fatalf("flush did not end with 00 00 ff ff: % x", b[max(0, len(b)-8):])
	}
	return append([]byte(nil), b[:len(b)-4]...)
}

// inflateMessage inflates a compressed message from the server (no
// context takeover: each on its own).
func inflateMessage(t testing.TB, p []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff})))
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("inflating the server's message: %v", err)
	}
	return out
}

// zframe is a masked data frame with RSV1 set.
func zframe(op wsproto.Opcode, fin bool, payload []byte) []byte {
	b := wsproto.AppendMaskedFrame(nil, op, fin, payload, [4]byte{3, 1, 4, 1})
	b[0] |= 0x40
	return b
}

// readData reads the next data frame (whole message, unfragmented) and
// reports whether it was compressed.
func readData(t testing.TB, c *wstest.Conn) ([]byte, bool) {
	t.Helper()
	for {
		h, p, err := c.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if h.Op.IsControl() {
			continue
		}
		if !h.Fin {
			t.Fatal("the server fragmented a message")
		}
		if h.RSV&4 != 0 {
			return inflateMessage(t, p), true
		}
		return p, false
	}
}

func dialExt(t testing.TB, url, ext string) (*wstest.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := wstest.Dial(ctx, url, http.Header{"Sec-WebSocket-Extensions": {ext}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, resp.Header.Get("Sec-WebSocket-Extensions")
}

func TestDeflateNegotiation(t *testing.T) {
	t.Parallel()
	_, url := start(t, engine.Config{Compression: true}, &engine.Echo{})
	_, takeover := start(t, engine.Config{Compression: true, CompressionContextTakeover: true}, &engine.Echo{})
	_, off := start(t, engine.Config{}, &engine.Echo{})
	const base = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
	for _, tc := range []struct {
		name, url, offer, want string
	}{
		{"plain offer", url, "permessage-deflate", base},
		{"client_max_window_bits without a value", url, "permessage-deflate; client_max_window_bits", base},
		{"client_max_window_bits=10", url, "permessage-deflate; client_max_window_bits=10", base},
		{"server_max_window_bits=10", url, "permessage-deflate; server_max_window_bits=10", base + "; server_max_window_bits=10"},
		{"quoted value", url, `permessage-deflate; server_max_window_bits="9"`, base + "; server_max_window_bits=9"},
		{"both no_context_takeover", url, "permessage-deflate; server_no_context_takeover; client_no_context_takeover", base},
		{"a bad offer, then a good one", url, "permessage-deflate; server_max_window_bits=7, permessage-deflate", base},
		{"an unknown extension first", url, "x-webkit-deflate-frame, permessage-deflate", base},
		{"server_max_window_bits without a value", url, "permessage-deflate; server_max_window_bits", ""},
		{"window bits 16", url, "permessage-deflate; server_max_window_bits=16", ""},
		{"window bits with a leading zero", url, "permessage-deflate; server_max_window_bits=09", ""},
		{"a parameter twice", url, "permessage-deflate; server_no_context_takeover; server_no_context_takeover", ""},
		{"an unknown parameter", url, "permessage-deflate; mystery", ""},
		{"a value on a flag", url, "permessage-deflate; client_no_context_takeover=1", ""},
		{"context takeover allowed", takeover, "permessage-deflate", "permessage-deflate; server_no_context_takeover"},
		{"takeover allowed, client declines it", takeover, "permessage-deflate; client_no_context_takeover", base},
		{"compression off", off, "permessage-deflate", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, got := dialExt(t, tc.url, tc.offer)
			if got != tc.want {
				t.Fatalf("Sec-WebSocket-Extensions %q, want %q", got, tc.want)
			}
		})
	}
}

// TestDeflateRoundTrip: compressed messages from a client (whole,
// fragmented, with context takeover) are inflated; the echo comes back
// compressed above the threshold, plain under it.
func TestDeflateRoundTrip(t *testing.T) {
	t.Parallel()
	long := strings.Repeat(`{"type":"message","room":"lobby","text":"hello, compressed world"} `, 20)
	for _, takeover := range []bool{false, true} {
		name := "no context takeover"
		if takeover {
			name = "context takeover"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv, url := start(t, engine.Config{Compression: true, CompressionContextTakeover: takeover}, &engine.Echo{})
			offer := "permessage-deflate"
			if !takeover {
				offer += "; client_no_context_takeover"
			}
			c, _ := dialExt(t, url, offer)
			d := &deflateClient{takeover: takeover}
			for i, msg := range []string{long, long + "again", "short", long[:500], "κόσμε " + long} {
				z := d.compress(t, []byte(msg))
				if i == 1 {
					// Fragmented: RSV1 on the first frame only.
					half := len(z) / 2
					b := append(zframe(wsproto.OpText, false, z[:half]),
						wsproto.AppendMaskedFrame(nil, wsproto.OpContinuation, true, z[half:], [4]byte{9, 9, 9, 9})...)
					if err := c.WriteRaw(b); err != nil {
						t.Fatal(err)
					}
				} else if err := c.WriteRaw(zframe(wsproto.OpText, true, z)); err != nil {
					t.Fatal(err)
				}
				got, compressed := readData(t, c)
				if string(got) != msg {
					t.Fatalf("message %d: echo %q, want %q", i, got, msg)
				}
				if want := len(msg) >= engine.DefaultCompressionThreshold; compressed != want {
					t.Fatalf("message %d (%d bytes): compressed %v, want %v", i, len(msg), compressed, want)
				}
			}
			// A plain message is fine too: compression is per message.
			if err := c.WriteRaw(wsproto.AppendMaskedFrame(nil, wsproto.OpText, true, []byte(long), [4]byte{1, 1, 1, 1})); err != nil {
				t.Fatal(err)
			}
			if got, _ := readData(t, c); string(got) != long {
				t.Fatal("a plain message after compressed ones")
			}
			if st := srv.Stats(); st.Inflated != 5 || st.DeflateClients != 1 || st.CompressedOut >= st.CompressedIn {
				t.Fatalf("stats: inflated %d, clients %d, compressed %d -> %d", st.Inflated, st.DeflateClients, st.CompressedIn, st.CompressedOut)
			}
		})
	}
}

// TestDeflateRefusals: a compression bomb is stopped at the message limit
// (1009); RSV1 on a continuation, on a control frame or without the
// extension, and data that does not inflate, close the client.
func TestDeflateRefusals(t *testing.T) {
	t.Parallel()
	_, url := start(t, engine.Config{Compression: true, MaxMessageSize: 64 << 10}, &engine.Echo{})
	d := &deflateClient{}
	bomb := d.compress(t, make([]byte, 10<<20)) // 10 MiB of zeros in about 10 KB
	for _, tc := range []struct {
		name string
		ext  string
		send []byte
		code int
	}{
		{"bomb", "permessage-deflate", zframe(wsproto.OpBinary, true, bomb), 1009},
		{"RSV1 on a continuation", "permessage-deflate", append(zframe(wsproto.OpText, false, d.compress(t, []byte("ab"))),
			zframe(wsproto.OpContinuation, true, d.compress(t, []byte("cd")))...), 1002},
		{"RSV1 on a ping", "permessage-deflate", zframe(wsproto.OpPing, true, nil), 1002},
		{"RSV1 without the extension", "", zframe(wsproto.OpText, true, d.compress(t, []byte("hello"))), 1002},
		{"not deflate", "permessage-deflate", zframe(wsproto.OpText, true, []byte{0xff, 0xff, 0xff, 0xff}), 1007},
		{"inflates to invalid UTF-8", "permessage-deflate", zframe(wsproto.OpText, true, d.compress(t, []byte{0xc3, 0x28})), 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, _ := dialExt(t, url, tc.ext)
			if err := c.WriteRaw(tc.send); err != nil {
				t.Fatal(err)
			}
			if ce, err := c.ExpectClose(); err != nil || ce.Code != tc.code {
				t.Fatalf("close %+v, %v; want %d", ce, err, tc.code)
			}
		})
	}
}

// TestBroadcastCompressedOnce: a broadcast to clients with and without
// permessage-deflate is compressed once; each gets the form it asked for;
// a client that limited the server's window gets longer messages plain.
func TestBroadcastCompressedOnce(t *testing.T) {
	t.Parallel()
	app := &relayAll{}
	srv, url := start(t, engine.Config{Compression: true}, app)
	var zs, plains []*wstest.Conn
	for range 5 {
		c, _ := dialExt(t, url, "permessage-deflate")
		zs = append(zs, c)
		plains = append(plains, dial(t, url, nil))
	}
	small, _ := dialExt(t, url, "permessage-deflate; server_max_window_bits=8")
	poll.Within(t, 5*time.Second, "11 clients", func() bool { return srv.Stats().Clients == 11 })
	msg := []byte(strings.Repeat(`{"type":"message","room":"lobby","seq":42,"from":"alice","text":"hi all"}`, 4))
	if n, err := app.ep.Broadcast(engine.Text, msg); err != nil || n != 11 {
		t.Fatalf("Broadcast: %d, %v", n, err)
	}
	for _, c := range zs {
		if got, z := readData(t, c); !z || !bytes.Equal(got, msg) {
			t.Fatalf("deflate client: compressed %v, equal %v", z, bytes.Equal(got, msg))
		}
	}
	for _, c := range append(plains, small) {
		if got, z := readData(t, c); z || !bytes.Equal(got, msg) {
			t.Fatalf("plain client (or window too small for %d bytes): compressed %v", len(msg), z)
		}
	}
	if st := srv.Stats(); st.Compressed != 1 {
		t.Fatalf("compressed %d times, want once for 5 recipients", st.Compressed)
	}
}

// relayAll keeps its endpoint for the test to broadcast through.
type relayAll struct {
	engine.BaseApplication
	ep *engine.Endpoint
}

func (a *relayAll) OnStart(ep *engine.Endpoint) error { a.ep = ep; return nil }

// TestInflationBudget: a client's inflated bytes are counted against a
// budget (MaxInflatedBytesPerSecond, 4 x MaxMessageSize by default)
// before the work is done: 70 messages of 80 bytes that inflate to 65,000
// each used to be inflated in full (4.5 MB from 5.6 KB); now at most a
// second's budget is inflated and the client is closed with 1008. An
// honest client under the budget is not.
func TestInflationBudget(t *testing.T) {
	t.Parallel()
	srv, url := start(t, engine.Config{Compression: true, MaxMessageSize: 64 << 10}, &engine.Echo{})
	d := &deflateClient{}
	flood := zframe(wsproto.OpText, true, d.compress(t, bytes.Repeat([]byte("a"), 65000)))
	c, _ := dialExt(t, url, "permessage-deflate")
	var all []byte
	for range 70 {
		all = append(all, flood...)
	}
	if err := c.WriteRaw(all); err != nil {
		t.Fatal(err)
	}
	for {
		h, p, err := c.ReadFrame()
		if err != nil {
			t.Fatalf("reading until the close: %v", err)
		}
		if h.Op == wsproto.OpClose {
			code, reason, _ := wsproto.ParseClosePayload(p)
			if code != 1008 || !strings.Contains(reason, "inflated") {
				t.Fatalf("close %d %q, want 1008 for the inflated byte rate", code, reason)
			}
			break
		}
	}
	if n := srv.Stats().Inflated; n > 4 { // 4 x 64 KiB = 262,144 >= 4 x 65,000
		t.Fatalf("%d messages inflated of 70, want at most a second's budget (4)", n)
	}
	honest, _ := dialExt(t, url, "permessage-deflate")
	for i := range 20 {
		msg := []byte(fmt.Sprintf("message %d: %s", i, strings.Repeat("chat ", 200)))
		if err := honest.WriteRaw(zframe(wsproto.OpText, true, d.compress(t, msg))); err != nil {
			t.Fatal(err)
		}
		if got, _ := readData(t, honest); !bytes.Equal(got, msg) {
			t.Fatalf("echo %d: %q", i, got)
		}
	}
}
