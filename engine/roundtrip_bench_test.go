package engine_test

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wsproto"
	"github.com/parleyhq/parley/internal/wstest"
)

// BenchmarkEchoRoundTrip: sequential request/response exchanges (Autobahn
// 9.7/9.8's shape: send, wait for the echo, send again) of 16 bytes, with
// the default flush window and with none; and, when PARLEY_BASELINE names
// the gorilla baseline's binary (make baseline: bin/baseline), against it
// on the same run (its chat hub echoes to a lone client). A lone reply
// starts no window, so default and off must be alike; a fixed window
// taxed each exchange ~1.1 ms.
func BenchmarkEchoRoundTrip(b *testing.B) {
	for _, window := range []time.Duration{0, -1} {
		name := "server=parley/window=default"
		if window < 0 {
			name = "server=parley/window=off"
		}
		b.Run(name, func(b *testing.B) {
			_, url := start(b, engine.Config{FlushWindow: window}, &engine.Echo{})
			roundTrips(b, dial(b, url, nil))
		})
	}
	// Servers in processes of their own, as the client's peers on the
	// machine rather than in its runtime: parley (PARLEY_BIN, its echo
	// endpoint) and the gorilla baseline (PARLEY_BASELINE).
	if bin := os.Getenv("PARLEY_BIN"); bin != "" {
		b.Run("server=parley-process", func(b *testing.B) {
			roundTrips(b, dial(b, "ws://"+child(b, bin, "serve", "--echo-path", "/echo", "--log-level", "warn")+"/echo", nil))
		})
		b.Run("server=parley-process-nowindow", func(b *testing.B) {
			roundTrips(b, dial(b, "ws://"+child(b, bin, "serve", "--echo-path", "/echo", "--log-level", "warn", "--flush-window", "off")+"/echo", nil))
		})
	}
	if bin := os.Getenv("PARLEY_BASELINE"); bin != "" {
		b.Run("server=gorilla-process", func(b *testing.B) {
			roundTrips(b, dial(b, "ws://"+child(b, bin)+"/ws", nil))
		})
	}
}

// child starts bin with args and --addr on a free port, waits until it
// listens, and returns the address; it is killed when b ends.
func child(b *testing.B, bin string, args ...string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, append(args, "--addr", addr)...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	poll.Within(b, 10*time.Second, bin+" listening", func() bool {
		cc, err := net.Dial("tcp", addr)
		if err == nil {
			cc.Close()
		}
		return err == nil
	})
	return addr
}

func roundTrips(b *testing.B, c *wstest.Conn) {
	msg := wsproto.AppendMaskedFrame(nil, wsproto.OpText, true, []byte("0123456789abcdef"), [4]byte{1, 2, 3, 4})
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if err := c.WriteRaw(msg); err != nil {
			b.Fatal(err)
		}
		if _, p, err := c.ReadMessage(); err != nil || len(p) != 16 {
			b.Fatalf("echo: %d bytes, %v", len(p), err)
		}
	}
	per := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(float64(per.Nanoseconds())/1e3, "us/roundtrip")
}
