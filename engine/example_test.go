package engine_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"sync"

	"github.com/parleyhq/parley/engine"
)

// seedChat is the Aerys demo chat written against the endpoint API: every
// client is named by its IP, every message is broadcast to everyone
// prefixed with the sender's IP, and "@<ip> text" goes privately to the
// clients of that IP and back to the sender, once.
type seedChat struct {
	ep  *engine.Endpoint
	mu  sync.Mutex
	ips map[engine.ClientID]string
}

var mention = regexp.MustCompile(`^@(\d+\.\d+\.\d+\.\d+)\s+(.*)$`)

func (c *seedChat) OnStart(ep *engine.Endpoint) error {
	c.ep, c.ips = ep, make(map[engine.ClientID]string)
	return nil
}

// OnHandshake hands the peer's IP to OnOpen. Origins are already checked
// by the engine (same origin unless Config.AllowedOrigins says otherwise).
func (c *seedChat) OnHandshake(r *http.Request) (any, error) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	return host, err
}

func (c *seedChat) OnOpen(id engine.ClientID, data any) {
	c.mu.Lock()
	c.ips[id] = data.(string)
	c.mu.Unlock()
}

func (c *seedChat) OnMessage(id engine.ClientID, typ engine.MessageType, data []byte) {
	c.mu.Lock()
	from := c.ips[id]
	var to []engine.ClientID
	m := mention.FindSubmatch(data)
	if m != nil {
		to = append(to, id) // the sender's copy; Multicast sends each id once
		for cid, ip := range c.ips {
			if ip == string(m[1]) {
				to = append(to, cid)
			}
		}
	}
	if m != nil {
		c.mu.Unlock()
		_, _ = c.ep.Multicast(to, engine.Text, fmt.Appendf(nil, "%s (private): %s", from, m[2]))
		return
	}
	// Broadcast under the lock: OnMessage runs concurrently for different
	// clients, and only sends ordered with each other reach everyone in
	// one order. Broadcast only queues, so the lock is held briefly.
	_, _ = c.ep.Broadcast(engine.Text, fmt.Appendf(nil, "%s: %s", from, data))
	c.mu.Unlock()
}

func (c *seedChat) OnClose(id engine.ClientID, code engine.StatusCode, reason string) {
	c.mu.Lock()
	delete(c.ips, id)
	c.mu.Unlock()
}

func (c *seedChat) OnStop() {}

// Example runs the seed's chat on /ws, with the seed's /test route, until
// interrupted.
func Example() {
	srv, err := engine.New(engine.Config{Addr: "localhost:1337"})
	if err != nil {
		log.Fatal(err)
	}
	_ = srv.Handle("/test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<h1>It works!</h1>")
	}))
	if _, err := srv.Mount("/ws", &seedChat{}); err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	<-ctx.Done()
	if err := srv.Shutdown(context.Background()); err != nil {
		log.Print(err)
	}
}

// ExampleCloseStatus shows how a close code is carried by an error.
func ExampleCloseStatus() {
	err := fmt.Errorf("client left: %w", &engine.CloseError{Code: engine.StatusGoingAway, Reason: "bye"})
	fmt.Println(engine.CloseStatus(err))
	fmt.Println(int(engine.CloseStatus(fmt.Errorf("no close here"))))
	// Output:
	// going away (1001)
	// -1
}
