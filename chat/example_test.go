package chat_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/parleyhq/parley/chat"
	parley "github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// Embedding the chat in another Go program: the hub is an
// engine.Application mounted beside the program's own routes, and its
// backend calls (Publish, SendDM, Presence, History, PutRule) are the
// program's way in.
func Example_embed() {
	quiet := slog.New(slog.DiscardHandler)
	hub, err := chat.New(chat.Config{DefaultRoom: "general", Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := engine.New(engine.Config{Addr: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := srv.Mount("/chat", hub); err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer srv.Shutdown(ctx)

	// A user of the program's page...
	c, err := parley.Dial(ctx, parley.Config{URL: "ws://" + srv.Addr().String() + "/chat", Nick: "ada"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Join(ctx, "general"); err != nil { // in it already: this waits for it
		log.Fatal(err)
	}
	// ...hears what the program says in its room.
	if err := hub.Publish(context.Background(), "general", "deploy finished", chat.Sender{}); err != nil {
		log.Fatal(err)
	}
	for ev := range c.Events() {
		if m, ok := ev.(*protocol.Message); ok {
			fmt.Printf("%s in %s: %s\n", m.From, m.Room, m.Text)
			break
		}
	}
	// Output: system in general: deploy finished
}
