package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/protocol"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// startChat runs a chat server for cfg and returns its ws:// URL.
func startChat(t *testing.T, cfg chat.Config) (*engine.Server, string) {
	t.Helper()
	cfg.Logger = testserver.Logger()
	hub, err := chat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return testserver.Start(t, engine.Config{}, hub)
}

// recorder keeps what a client's Events delivered.
type recorder struct {
	mu   sync.Mutex
	evs  []client.Event
	done chan struct{}
}

func record(c *client.Client) *recorder {
	r := &recorder{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range c.Events() {
			r.mu.Lock()
			r.evs = append(r.evs, ev)
			r.mu.Unlock()
		}
	}()
	return r
}

// messages returns the room messages delivered in room, history
// entries included, in the order delivered.
func (r *recorder) messages(t *testing.T, room string) []protocol.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []protocol.Message
	for _, ev := range r.evs {
		switch e := ev.(type) {
		case *protocol.Message:
			if e.Room == room {
				out = append(out, *e)
			}
		case *protocol.History:
			if e.Room != room {
				continue
			}
			for _, raw := range e.Messages {
				var m protocol.Message
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatal(err)
				}
				if m.Type == protocol.EventMessage {
					out = append(out, m)
				}
			}
		}
	}
	return out
}

// count returns how many events match.
func (r *recorder) count(match func(client.Event) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.evs {
		if match(ev) {
			n++
		}
	}
	return n
}

// nextMessage reads o's frames up to its next room message.
func nextMessage(t *testing.T, o *chattest.Client) protocol.Message {
	t.Helper()
	for {
		_, b, err := o.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var m protocol.Message
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if m.Type == protocol.EventMessage {
			return m
		}
	}
}

func texts(ms []protocol.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Text)
	}
	return out
}

// checkOnceInOrder fails unless ms's sequence numbers rise strictly: no
// entry delivered twice, none out of order.
func checkOnceInOrder(t *testing.T, ms []protocol.Message) {
	t.Helper()
	for i := 1; i < len(ms); i++ {
		if ms[i].Seq <= ms[i-1].Seq {
			t.Fatalf("seq %d (%q) after seq %d (%q): %q", ms[i].Seq, ms[i].Text, ms[i-1].Seq, ms[i-1].Text, texts(ms))
		}
	}
}

// proxy forwards TCP connections to a server; cut drops them as a network
// would, and refuse makes new ones fail.
type proxy struct {
	ln     net.Listener
	target atomic.Value // string
	refuse atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	p.target.Store(target)
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.refuse.Load() {
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", p.target.Load().(string))
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) setTarget(addr string) { p.target.Store(addr) }

func (p *proxy) url() string { return "ws://" + p.ln.Addr().String() + "/ws" }

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestResume: a client whose connection drops reconnects, gets what its
// rooms said meanwhile once and in order, and says what it said offline
// once; after Close none of its goroutines is left.
func TestResume(t *testing.T) {
	srv, url := startChat(t, chat.Config{})
	p := newProxy(t, srv.Addr().String())
	alice := chattest.Connect(t, url) // in lobby

	ctx := ctxT(t)
	bot, err := client.Dial(ctx, client.Config{URL: p.url(), Nick: "bot", MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rec := record(bot)
	if err := bot.Say(ctx, "lobby", "b1"); err != nil {
		t.Fatal(err)
	}
	said := func(text string) {
		alice.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: text})
		for nextMessage(t, alice).Text != text {
		}
	}
	said("a1")
	p.refuse.Store(true)
	p.cut()
	poll.Until(t, "the bot to see its connection drop", func() bool {
		return rec.count(func(ev client.Event) bool { _, ok := ev.(*client.Disconnected); return ok }) == 1
	})
	said("a2")
	said("a3")
	offline := make(chan error, 1)
	go func() { offline <- bot.Say(ctx, "lobby", "b2") }()
	said("a4")
	p.refuse.Store(false)
	if err := <-offline; err != nil {
		t.Fatalf("say while offline: %v", err)
	}
	said("a5")
	poll.Until(t, "the bot to see a5", func() bool { return slices.Contains(texts(rec.messages(t, "lobby")), "a5") })
	got := rec.messages(t, "lobby")
	checkOnceInOrder(t, got)
	if want := []string{"b1", "a1", "a2", "a3", "a4", "b2", "a5"}; !slices.Equal(texts(got), want) {
		t.Fatalf("bot saw %q, want %q", texts(got), want)
	}
	if clientGoroutines() == 0 {
		t.Fatal("no goroutine of the client seen running: the leak check below would see nothing")
	}
	if err := bot.Close(); err != nil {
		t.Fatal(err)
	}
	<-rec.done
	poll.Until(t, "the client's goroutines to end", func() bool { return clientGoroutines() == 0 })
}

// clientGoroutines counts the goroutines running the client's code.
func clientGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "parley/client.(") || strings.Contains(g, "coder/websocket.") {
			n++
		}
	}
	return n
}

// TestGapSurfaced: a client away longer than the room keeps messages
// gets a history with gap set, and then the room's next messages.
func TestGapSurfaced(t *testing.T) {
	srv, url := startChat(t, chat.Config{HistorySize: 3, ResumeWindow: -1})
	p := newProxy(t, srv.Addr().String())
	alice := chattest.Connect(t, url)
	ctx := ctxT(t)
	bot, err := client.Dial(ctx, client.Config{URL: p.url(), MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer bot.Close()
	rec := record(bot)
	if err := bot.Say(ctx, "lobby", "first"); err != nil {
		t.Fatal(err)
	}
	p.refuse.Store(true)
	p.cut()
	poll.Until(t, "the bot to drop", func() bool {
		return rec.count(func(ev client.Event) bool { _, ok := ev.(*client.Disconnected); return ok }) == 1
	})
	for i := range 10 {
		alice.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: fmt.Sprint("m", i)})
	}
	for i := 0; i < 10; {
		if nextMessage(t, alice).Room == "lobby" {
			i++
		}
	}
	p.refuse.Store(false)
	poll.Until(t, "a history with a gap", func() bool {
		return rec.count(func(ev client.Event) bool { h, ok := ev.(*protocol.History); return ok && h.Gap }) == 1
	})
	got := rec.messages(t, "lobby")
	checkOnceInOrder(t, got)
	if want := []string{"first", "m7", "m8", "m9"}; !slices.Equal(texts(got), want) {
		t.Fatalf("bot saw %q, want %q", texts(got), want)
	}
}

// TestRetryNeverDuplicates: a message answered not_delivered is said
// again until the room has it, and heard once, whether the first copy
// was lost, stored, or stored after the resend.
func TestRetryNeverDuplicates(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault chattest.Fault
	}{{"lost", chattest.Lost}, {"stored", chattest.Stored}, {"stored late", chattest.Late}} {
		t.Run(tc.name, func(t *testing.T) {
			fb := chattest.NewFlakyBroker(tc.fault)
			_, url := startChat(t, chat.Config{Broker: fb, Presence: fb.MemoryBroker, Reads: fb.MemoryBroker})
			alice := chattest.Connect(t, url)
			ctx := ctxT(t)
			bot, err := client.Dial(ctx, client.Config{URL: url, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer bot.Close()
			rec := record(bot)
			for i := range 5 {
				if err := bot.Say(ctx, "lobby", fmt.Sprint("b", i)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.fault == chattest.Late {
				poll.Until(t, "the late copies tried", func() bool { return fb.LateDone.Load() == 5 })
			}
			alice.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "end"})
			var heard []string
			for {
				e := nextMessage(t, alice)
				if e.Text == "end" {
					break
				}
				heard = append(heard, e.Text)
			}
			if want := []string{"b0", "b1", "b2", "b3", "b4"}; !slices.Equal(heard, want) {
				t.Fatalf("alice heard %q, want %q", heard, want)
			}
			poll.Until(t, "the bot to see end", func() bool { return slices.Contains(texts(rec.messages(t, "lobby")), "end") })
			checkOnceInOrder(t, rec.messages(t, "lobby"))
		})
	}
}

// TestRefusedSay: a say the server refuses for good returns its error.
func TestRefusedSay(t *testing.T) {
	_, url := startChat(t, chat.Config{MaxTextLength: 10})
	ctx := ctxT(t)
	bot, err := client.Dial(ctx, client.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer bot.Close()
	record(bot)
	var ce *client.Error
	if err := bot.Say(ctx, "lobby", "far too long a message"); !errors.As(err, &ce) || ce.Code != protocol.CodeTooLong {
		t.Fatalf("say: %v, want too_long", err)
	}
	if err := bot.Say(ctx, "elsewhere", "hi"); !errors.As(err, &ce) || ce.Code != protocol.CodeNotInRoom {
		t.Fatalf("say: %v, want not_in_room", err)
	}
	if _, err := bot.Join(ctx, "bad room"); !errors.As(err, &ce) || ce.Code != protocol.CodeBadRoom {
		t.Fatalf("join: %v, want bad_room", err)
	}
}

// TestPaced: a client saying faster than the server's rate limit is
// paced, never refused, and every message is heard once.
func TestPaced(t *testing.T) {
	_, url := startChat(t, chat.Config{RateLimit: 20, RateBurst: 5})
	ctx := ctxT(t)
	bot, err := client.Dial(ctx, client.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer bot.Close()
	rec := record(bot)
	const n = 30
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- bot.Say(ctx, "lobby", fmt.Sprint(i)) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, "every message delivered", func() bool { return len(rec.messages(t, "lobby")) >= n })
	got := rec.messages(t, "lobby")
	checkOnceInOrder(t, got)
	if len(got) != n {
		t.Fatalf("%d messages, want %d", len(got), n)
	}
	if k := rec.count(func(ev client.Event) bool { _, ok := ev.(*protocol.Error); return ok }); k != 0 {
		t.Fatalf("%d errors", k)
	}
}

// TestTokenRefresh: a signed-in client asks for a fresh token before the
// one in force expires, and stays connected past it.
func TestTokenRefresh(t *testing.T) {
	is := authtest.New(t)
	_, url := startChat(t, chat.Config{Verifier: is.Verifier()})
	var calls atomic.Int32
	token := func(context.Context) (string, error) {
		calls.Add(1)
		c := authtest.Claims("u1")
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(3 * time.Second))
		return is.Sign(c), nil
	}
	ctx := ctxT(t)
	bot, err := client.Dial(ctx, client.Config{URL: url, Token: token, RefreshBefore: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bot.Close()
	rec := record(bot)
	poll.Within(t, 6*time.Second, "two refreshes", func() bool {
		return rec.count(func(ev client.Event) bool { _, ok := ev.(*protocol.Authed); return ok }) >= 2
	})
	if n := rec.count(func(ev client.Event) bool { _, ok := ev.(*client.Disconnected); return ok }); n != 0 {
		t.Fatalf("%d disconnections", n)
	}
	if err := bot.Say(ctx, "lobby", "still here"); err != nil {
		t.Fatal(err)
	}
	if calls.Load() < 3 {
		t.Fatalf("Token called %d times, want 3", calls.Load())
	}
}

// TestBanned: a banned user is closed with 4003 and the client stops.
func TestBanned(t *testing.T) {
	is := authtest.New(t)
	hub, err := chat.New(chat.Config{Verifier: is.Verifier(), Logger: testserver.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	_, url := testserver.Start(t, engine.Config{}, hub)
	ctx := ctxT(t)
	bot, err := client.Dial(ctx, client.Config{URL: url, Token: func(context.Context) (string, error) { return is.Token("u2"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer bot.Close()
	rec := record(bot)
	if err := hub.PutRule(context.Background(), chat.Rule{Kind: chat.RuleBanUser, Subject: "u2", Until: time.Now().Add(time.Hour).UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	<-rec.done // Events closed
	if !errors.Is(bot.Err(), client.ErrBanned) {
		t.Fatalf("Err: %v, want ErrBanned", bot.Err())
	}
}

// TestConfigErrors: a bad Config is refused naming its field.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg   client.Config
		field string
	}{
		{client.Config{}, "URL"},
		{client.Config{URL: "http://localhost/ws"}, "URL"},
		{client.Config{URL: "ws://localhost/ws", Fallbacks: []string{"localhost"}}, "Fallbacks[0]"},
		{client.Config{URL: "ws://localhost/ws", MinBackoff: -1}, "MinBackoff"},
		{client.Config{URL: "ws://localhost/ws", MinBackoff: time.Minute}, "MaxBackoff"},
		{client.Config{URL: "ws://localhost/ws", MaxPending: -1}, "MaxPending"},
	} {
		_, err := client.New(tc.cfg)
		var ce *client.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, client.ErrInvalidConfig) {
			t.Errorf("%+v: %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
}
