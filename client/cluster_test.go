package client_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/chat/natsbroker"
	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/protocol"
)

// startNode starts a Parley node sharing rooms through the NATS at url,
// and returns its server.
func startNode(t *testing.T, url, name, token string) *engine.Server {
	t.Helper()
	b, err := natsbroker.New(natsbroker.Config{URL: url, Node: name, Token: token, Heartbeat: 100 * time.Millisecond,
		Logger: testserver.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := chat.New(chat.Config{Broker: b, PresenceInterval: 20 * time.Millisecond, Logger: testserver.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := testserver.Start(t, engine.Config{}, hub)
	return srv
}

// TestClusterFailover: a client behind which its node restarts, and then
// dies, resumes its room on the restarted node and then on another node,
// hearing everything once and in order, and what it said offline once.
func TestClusterFailover(t *testing.T) {
	const token = "parley-client-test-token-0123"
	ns, err := natsbroker.StartServer(natsbroker.ServerConfig{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Token: token,
		Logger: testserver.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	n1 := startNode(t, ns.URL(), "n1", token)
	n2 := startNode(t, ns.URL(), "n2", token)
	p := newProxy(t, n1.Addr().String())
	alice := chattest.Connect(t, "ws://"+n2.Addr().String()+"/ws")

	ctx := ctxT(t)
	bot, err := client.Dial(ctx, client.Config{URL: p.url(), Fallbacks: []string{"ws://" + n2.Addr().String() + "/ws"},
		Nick: "bot", MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer bot.Close()
	rec := record(bot)
	said := func(text string) {
		alice.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: text})
		for nextMessage(t, alice).Text != text {
		}
	}
	drops := func() int {
		return rec.count(func(ev client.Event) bool { _, ok := ev.(*client.Disconnected); return ok })
	}
	if err := bot.Say(ctx, "lobby", "b1"); err != nil {
		t.Fatal(err)
	}
	said("a1")

	// n1 restarts: the proxy refuses meanwhile, so the bot waits for it.
	p.refuse.Store(true)
	p.cut()
	shutdown(t, n1)
	poll.Until(t, "the bot to drop", func() bool { return drops() == 1 })
	said("a2")
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := bot.Say(ctx, "lobby", "b2"); err != nil {
			t.Error(err)
		}
	})
	n1 = startNode(t, ns.URL(), "n1", token)
	p.setTarget(n1.Addr().String())
	p.refuse.Store(false)
	wg.Wait()
	said("a3")

	// n1 dies: the bot goes on on n2.
	p.refuse.Store(true)
	p.cut()
	shutdown(t, n1)
	said("a4")
	wg.Go(func() {
		if err := bot.Say(ctx, "lobby", "b3"); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	said("a5")
	poll.Until(t, "the bot to see a5", func() bool { return slices.Contains(texts(rec.messages(t, "lobby")), "a5") })
	got := rec.messages(t, "lobby")
	checkOnceInOrder(t, got)
	if want := []string{"b1", "a1", "a2", "b2", "a3", "a4", "b3", "a5"}; !slices.Equal(texts(got), want) {
		t.Fatalf("bot saw %q, want %q", texts(got), want)
	}
}

func shutdown(t *testing.T, srv *engine.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
