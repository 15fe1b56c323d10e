package engine_test

import (
	"errors"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
)

func TestGroup(t *testing.T) {
	t.Parallel()
	app := newRecorder()
	_, url := start(t, engine.Config{Writers: 2}, app)
	conns, ids := connect(t, app, url, 4)
	ep := app.endpoint()
	g := ep.NewGroup()
	for _, id := range ids[:3] {
		if err := g.Add(id); err != nil {
			t.Fatal(err)
		}
	}
	_ = g.Add(ids[0]) // again: no effect
	// Adds are ordered with sends: the members get it, client 3 does not.
	if _, err := g.Send(engine.Text, []byte("to the group")); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Send(engine.Text, []byte("not to 1"), ids[1]); err != nil {
		t.Fatal(err)
	}
	_ = g.Remove(ids[2])
	_, _ = g.Send(engine.Text, []byte("after 2 left"))
	for _, id := range ids {
		_ = ep.Send(id, engine.Text, []byte("end"))
	}
	want := [][]string{
		{"to the group", "not to 1", "after 2 left", "end"},
		{"to the group", "after 2 left", "end"},
		{"to the group", "not to 1", "end"},
		{"end"},
	}
	for i, c := range conns {
		for _, w := range want[i] {
			if got, err := c.ReadText(); err != nil || got != w {
				t.Fatalf("client %d: got %q, %v; want %q", i, got, err, w)
			}
		}
	}
	if n := g.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	// A closing client leaves its groups.
	conns[0].Close()
	app.next(t, "close")
	poll.Within(t, 5*time.Second, "the closed client to leave the group", func() bool { return g.Len() == 1 })
	if err := g.Add(ids[0]); !errors.Is(err, engine.ErrUnknownClient) {
		t.Fatalf("Add of a closed client: %v, want ErrUnknownClient", err)
	}
	if _, err := g.Send(engine.Text, []byte{0xff}); !errors.Is(err, engine.ErrInvalidUTF8) {
		t.Fatalf("Send of invalid UTF-8: %v", err)
	}
}
