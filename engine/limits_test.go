package engine_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wsproto"
	"github.com/parleyhq/parley/internal/wstest"
)

func tryDial(t *testing.T, url string) (*wstest.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return wstest.Dial(ctx, url, nil)
}

func TestMaxConnectionsPerAddr(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	srv, url := start(t, engine.Config{MaxConnectionsPerAddr: 3}, app)
	var cs []*wstest.Conn
	for range 3 {
		cs = append(cs, dial(t, url, nil))
	}
	_, resp, err := tryDial(t, url)
	if !errors.Is(err, wstest.ErrBadHandshake) || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("4th connection from one address: %v", err)
	}
	// A slot frees when a client leaves.
	cs[0].Close()
	app.next(t, "close")
	c, _, err := tryDial(t, url)
	if err != nil {
		t.Fatalf("after a client left: %v", err)
	}
	c.Close()
	if got := srv.Stats().RefusedAddr; got != 1 {
		t.Fatalf("RefusedAddr = %d, want 1", got)
	}
}

func TestConnectRatePerAddr(t *testing.T) {
	t.Parallel()
	srv, url := start(t, engine.Config{ConnectRatePerAddr: 5}, newRecorder())
	ok, refused := 0, 0
	for range 8 {
		c, resp, err := tryDial(t, url)
		switch {
		case err == nil:
			ok++
			c.Close()
		case resp != nil && resp.StatusCode == http.StatusTooManyRequests:
			refused++
		default:
			t.Fatal(err)
		}
	}
	// A burst of one second's worth passes; the rest of an instant burst is refused.
	if ok < 5 || refused == 0 || srv.Stats().RefusedAddr != uint64(refused) {
		t.Fatalf("8 connections at once with 5/s allowed: %d ok, %d refused", ok, refused)
	}
}

// TestConnectRateBelowOne: a rate under one a second admits one
// connection, then one per 1/rate seconds; it used to refuse everyone.
func TestConnectRateBelowOne(t *testing.T) {
	t.Parallel()
	_, url := start(t, engine.Config{ConnectRatePerAddr: 0.5}, newRecorder())
	c, _, err := tryDial(t, url)
	if err != nil {
		t.Fatalf("the first connection at 0.5/s: %v", err)
	}
	c.Close()
	if _, resp, err := tryDial(t, url); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a second at once at 0.5/s: %v, want 429", err)
	}
}

func TestInboundRateLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		cfg    engine.Config
		flood  func(c *wstest.Conn) error
		reason string
	}{
		{"ping flood", engine.Config{MaxMessagesPerSecond: 10}, func(c *wstest.Conn) error {
			for range 50 {
				if err := c.WriteFrame(wsproto.OpPing, true, nil); err != nil {
					return err
				}
			}
			return nil
		}, "message rate limit exceeded"},
		{"ping flood, default limits", engine.Config{}, func(c *wstest.Conn) error {
			for range 50 {
				if err := c.WriteFrame(wsproto.OpPing, true, []byte("p")); err != nil {
					return err
				}
			}
			return nil
		}, "ping rate limit exceeded"},
		{"bytes", engine.Config{MaxMessageSize: 64 << 10, MaxBytesPerSecond: 100 << 10}, func(c *wstest.Conn) error {
			big := make([]byte, 60<<10)
			for range 3 {
				if err := c.WriteFrame(wsproto.OpBinary, true, big); err != nil {
					return err
				}
			}
			return nil
		}, "byte rate limit exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, url := start(t, tc.cfg, newRecorder())
			c := dial(t, url, nil)
			c.AutoPong = false
			if err := tc.flood(c); err != nil {
				t.Fatal(err)
			}
			ce, err := c.ExpectClose()
			if err != nil || ce.Code != 1008 || ce.Reason != tc.reason {
				t.Fatalf("close %+v, %v; want 1008 %q", ce, err, tc.reason)
			}
			if srv.Stats().RateLimited != 1 {
				t.Fatalf("RateLimited = %d", srv.Stats().RateLimited)
			}
		})
	}
	// A client within the limits is left alone.
	_, url := start(t, engine.Config{MaxMessagesPerSecond: 10}, newRecorder())
	c := dial(t, url, nil)
	for range 5 {
		if err := c.WriteFrame(wsproto.OpPing, true, []byte("p")); err != nil {
			t.Fatal(err)
		}
		if h, _, err := c.ReadFrame(); err != nil || h.Op != wsproto.OpPong {
			t.Fatalf("pong: %v %v", h.Op, err)
		}
	}
}

// TestIdleConnectionsCountAgainstTheirAddress: connections that never
// upgrade take their address's slots like clients (from accept on), so
// one address cannot hold the server's descriptors with idle sockets; a
// slot frees when such a connection closes.
func TestIdleConnectionsCountAgainstTheirAddress(t *testing.T) {
	t.Parallel()
	srv, url := start(t, engine.Config{MaxConnectionsPerAddr: 3, HandshakeTimeout: time.Minute}, newRecorder())
	var idle []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	_, resp, err := tryDial(t, url)
	if !errors.Is(err, wstest.ErrBadHandshake) || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a client beside 3 idle connections: %v", err)
	}
	idle[0].Close()
	poll.Within(t, 10*time.Second, "the idle connection's slot", func() bool {
		c, _, err := tryDial(t, url)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}
