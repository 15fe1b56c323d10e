package engine_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wstest"
)

// user is handshake data of a privileged client.
type user struct{}

func (user) Privileged() bool { return true }

// TestMakingRoom: when full, a new client takes the slot of the oldest
// guest that never sent a message (closed with 1013); guests that spoke
// are kept, and a guest finds the server full before the slots kept for
// privileged clients are taken. Idle clients used to hold every slot.
func TestMakingRoom(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	app.handshake = func(r *http.Request) (any, error) {
		if r.URL.Query().Get("user") != "" {
			return user{}, nil
		}
		return nil, nil
	}
	srv, url := start(t, engine.Config{MaxConnections: 10, ReservedConnections: 3}, app)
	var guests []*wstest.Conn
	for range 7 { // every slot open to guests
		guests = append(guests, dial(t, url, nil))
		app.next(t, "open")
	}
	late := dial(t, url, nil) // takes the oldest silent guest's slot
	app.next(t, "open")
	if ce, err := guests[0].ExpectClose(); err != nil || ce.Code != 1013 {
		t.Fatalf("the oldest silent guest: %+v, %v; want 1013", ce, err)
	}
	poll.Until(t, "the evicted guest gone", func() bool { return srv.Stats().Clients == 7 })
	// Every guest speaks: none may be dropped now.
	for _, c := range append(guests[1:], late) {
		if err := c.WriteText("hello"); err != nil {
			t.Fatal(err)
		}
		app.next(t, "message")
	}
	if _, resp, err := tryDial(t, url); !errors.Is(err, wstest.ErrBadHandshake) || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a guest with only speaking guests and reserved slots left: %v, want 503", err)
	}
	for range 3 { // the reserved slots
		dial(t, url+"?user=1", nil)
		app.next(t, "open")
	}
	if _, resp, err := tryDial(t, url+"?user=1"); !errors.Is(err, wstest.ErrBadHandshake) || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a user with every slot taken by clients that spoke or are users: %v, want 503", err)
	}
	if st := srv.Stats(); st.EvictedSilent != 1 || st.RefusedLimit != 2 {
		t.Fatalf("evicted %d, refused %d; want 1 and 2", st.EvictedSilent, st.RefusedLimit)
	}
}

// TestMaxConnectionsPerNetwork: connections from one /24 share a limit
// on top of each address's.
func TestMaxConnectionsPerNetwork(t *testing.T) {
	t.Parallel()
	srv, url := start(t, engine.Config{MaxConnectionsPerAddr: 2, MaxConnectionsPerNetwork: 3}, newRecorder())
	from := func(ip string) (*wstest.Conn, *http.Response, error) { return dialFrom(url, ip) }
	for _, tc := range []struct {
		ip   string
		want string // "" admitted, else the 429's body names it
	}{
		{"127.0.0.2", ""}, {"127.0.0.2", ""}, {"127.0.0.2", "your address"},
		{"127.0.0.3", ""}, {"127.0.0.3", "your network"}, {"127.0.0.4", "your network"},
		{"127.0.1.2", ""},
	} {
		c, resp, err := from(tc.ip)
		switch {
		case tc.want == "" && err != nil:
			t.Fatalf("%s: %v", tc.ip, err)
		case tc.want == "":
			t.Cleanup(func() { c.Close() })
		case resp == nil || resp.StatusCode != http.StatusTooManyRequests:
			t.Fatalf("%s: %v, want 429", tc.ip, err)
		default:
			b, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(b)+err.Error(), tc.want) {
				t.Fatalf("%s: %q, want it to name %q", tc.ip, b, tc.want)
			}
		}
	}
	if st := srv.Stats(); st.RefusedNetwork != 2 || st.RefusedAddr != 1 {
		t.Fatalf("refused by network %d, by address %d; want 2 and 1", st.RefusedNetwork, st.RefusedAddr)
	}
}

// TestEvictedAddressWaits: an address whose silent guest was closed to
// make room may not make room itself for a while, so idle clients that
// come back at once do not take each other's slots without end; another
// address still may.
func TestEvictedAddressWaits(t *testing.T) {
	t.Parallel()
	srv, url := start(t, engine.Config{MaxConnections: 4, ReservedConnections: -1, MaxConnectionsPerAddr: 10, ConnectRatePerAddr: 100}, newRecorder())
	from := func(ip string) (*wstest.Conn, *http.Response, error) { return dialFrom(url, ip) }
	var idle []*wstest.Conn
	for range 4 {
		c, _, err := from("127.0.0.2")
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	if _, _, err := from("127.0.0.3"); err != nil { // makes room: closes one of 127.0.0.2's
		t.Fatalf("a new address against silent guests: %v", err)
	}
	if ce, err := idle[0].ExpectClose(); err != nil || ce.Code != 1013 {
		t.Fatalf("%+v, %v", ce, err)
	}
	poll.Until(t, "the evicted guest gone", func() bool { return srv.Stats().Clients == 4 })
	if _, resp, err := from("127.0.0.2"); resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("the evicted guest's address coming back: %v, want 503", err)
	}
	if _, _, err := from("127.0.0.4"); err != nil {
		t.Fatalf("another address: %v", err)
	}
}

// dialFrom dials url from the local address ip.
func dialFrom(url, ip string) (*wstest.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return wstest.DialWith(ctx, &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}, url, nil)
}
