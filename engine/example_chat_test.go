package engine_test

import (
	"strings"
	"testing"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
)

// TestExampleSeedChat runs the Example's application for real: public
// messages reach everyone, a private message reaches the mentioned IP and
// the sender once, not twice, and is not garbled.
func TestExampleSeedChat(t *testing.T) {
	t.Parallel()
	app := &seedChat{}
	_, url := start(t, engine.Config{}, app)
	a := dial(t, url, nil)
	b := dial(t, url, nil)
	// A broadcast reaches every connected client, but the private message
	// goes to the IPs the application has recorded: wait until both
	// clients' OnOpen ran (on a busy machine b heard "hello" before).
	poll.Until(t, "both clients open in the application", func() bool {
		app.mu.Lock()
		defer app.mu.Unlock()
		return len(app.ips) == 2
	})
	if err := a.WriteText("hello"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []interface{ ReadText() (string, error) }{a, b} {
		if got, err := c.ReadText(); err != nil || got != "127.0.0.1: hello" {
			t.Fatalf("public message: %q, %v", got, err)
		}
	}
	// Both clients are 127.0.0.1: each gets the private message once.
	if err := a.WriteText("@127.0.0.1 psst"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []interface{ ReadText() (string, error) }{a, b} {
		if got, err := c.ReadText(); err != nil || got != "127.0.0.1 (private): psst" {
			t.Fatalf("private message: %q, %v", got, err)
		}
	}
	if err := a.WriteText("end"); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.ReadText(); !strings.HasSuffix(got, ": end") {
		t.Fatalf("sender got %q after the private message, want no duplicate", got)
	}
}
