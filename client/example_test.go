package client_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// A bot that answers in a room: it echoes what others say in the lobby.
func Example_bot() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, url := startServer() // ws://127.0.0.1:port/ws: a Parley server
	defer srv.Shutdown(ctx)

	bot, err := client.Dial(ctx, client.Config{URL: url, Nick: "echo-bot"})
	if err != nil {
		log.Fatal(err)
	}
	defer bot.Close()
	go func() {
		for ev := range bot.Events() {
			if m, ok := ev.(*protocol.Message); ok && m.From != bot.Nick() && !strings.HasPrefix(m.Text, "echo: ") {
				go bot.Say(ctx, m.Room, "echo: "+m.Text) // Say waits for the room, which answers through Events
			}
		}
	}()

	// Someone says hello in the lobby (every client is in it on connect).
	alice, err := client.Dial(ctx, client.Config{URL: url, Nick: "alice"})
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Close()
	if err := alice.Say(ctx, "lobby", "hello"); err != nil {
		log.Fatal(err)
	}
	for ev := range alice.Events() {
		if m, ok := ev.(*protocol.Message); ok && m.From == "echo-bot" {
			fmt.Println(m.From+":", m.Text)
			break
		}
	}
	// Output: echo-bot: echo: hello
}

// The shortest bot: it answers everything said in its rooms. (Compiled,
// not run: it runs until the server goes away for good.)
func ExampleDial() {
	ctx := context.Background()
	url := "ws://localhost:1337/ws"
	bot, err := client.Dial(ctx, client.Config{URL: url, Nick: "echo-bot"})
	if err != nil {
		log.Fatal(err)
	}
	defer bot.Close()
	for ev := range bot.Events() { // *protocol.Message, *protocol.Joined, ... and *client.Disconnected
		if m, ok := ev.(*protocol.Message); ok && m.From != bot.Nick() {
			go bot.Say(ctx, m.Room, "echo: "+m.Text) // returns once the room has it
		}
	}
}

// startServer starts a Parley chat server on a free port of 127.0.0.1 and
// returns it with its WebSocket URL.
func startServer() (*engine.Server, string) {
	hub, err := chat.New(chat.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := engine.New(engine.Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := srv.Mount("/ws", hub); err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		log.Fatal(err)
	}
	return srv, "ws://" + srv.Addr().String() + "/ws"
}
