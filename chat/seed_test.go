package chat_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/wsproto"
	"github.com/parleyhq/parley/internal/wstest"
)

func TestSeedBroadcastsWithIP(t *testing.T) {
	srv, err := engine.New(engine.Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Mount("/ws", &chat.Seed{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := "ws://" + srv.Addr().String() + "/ws"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var cs []*wstest.Conn
	for range 3 {
		c, _, err := wstest.Dial(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		cs = append(cs, c)
	}
	// Each client's own "ready" echo shows it is open before the real test.
	for _, c := range cs {
		_ = c.WriteText("ready")
		for {
			if got, err := c.ReadText(); err != nil {
				t.Fatal(err)
			} else if got == "127.0.0.1: ready" {
				break
			}
		}
	}
	// Blank and binary messages are not broadcast; text is, to everyone.
	_ = cs[0].WriteText("   ")
	_ = cs[0].WriteFrame(wsproto.OpBinary, true, []byte("bin"))
	_ = cs[0].WriteText("hello, é")
	for i, c := range cs {
		for {
			got, err := c.ReadText()
			if err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
			if got == "127.0.0.1: ready" {
				continue // another client's ready
			}
			if got != "127.0.0.1: hello, é" {
				t.Fatalf("client %d got %q", i, got)
			}
			break
		}
	}
}
