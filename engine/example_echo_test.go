package engine_test

import (
	"context"
	"sync"

	"github.com/parleyhq/parley/engine"
)

// echoAll is the README's application: every message goes to every other
// client.
type echoAll struct {
	engine.BaseApplication
	ep *engine.Endpoint
	mu sync.Mutex // one order of messages for every client
}

func (a *echoAll) OnStart(ep *engine.Endpoint) error { a.ep = ep; return nil }

func (a *echoAll) OnMessage(id engine.ClientID, typ engine.MessageType, data []byte) {
	// OnMessage runs concurrently for different clients, and concurrent
	// sends may reach clients interleaved differently: sending under one
	// lock gives everyone the same order. Broadcast only queues, so the
	// lock is held for microseconds.
	a.mu.Lock()
	a.ep.Broadcast(typ, data, id) // to everyone but the sender, framed once
	a.mu.Unlock()
}

// An echo server in 15 lines: the README's program (compiled, not run:
// it listens on localhost:1337).
func Example_echoAll() {
	srv, _ := engine.New(engine.Config{Addr: "localhost:1337"}) // zero fields take the defaults
	srv.Mount("/ws", &echoAll{})
	srv.Start()
	// ... on SIGTERM:
	srv.Shutdown(context.Background()) // close 1001 to every client, then stop
}
