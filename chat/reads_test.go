package chat_test

import (
	"slices"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/protocol"
)

// TestReadState: a signed-in user's read position is the server's: a
// read on one connection reaches its others, never moves back, never
// past the room's last message, and a new connection learns it when it
// joins. Guests keep theirs in their page.
func TestReadState(t *testing.T) {
	t.Parallel()
	is := authtest.New(t)
	hub, _, url := startChat(t, chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsAllowed}, engine.Config{})
	phone := connect(t, url+"?access_token="+is.Token("u1"))
	laptop := connect(t, url+"?access_token="+is.Token("u1"))
	other := connect(t, url+"?access_token="+is.Token("u2"))
	guest := connect(t, url)
	for _, text := range []string{"a", "b", "c"} {
		other.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: text})
	}
	for _, c := range []*client{phone, laptop, guest} {
		for range 3 {
			c.Expect("message")
		}
	}
	expectRead := func(c *client, seq int64) {
		t.Helper()
		if r := c.Expect("read"); r.Room != "lobby" || r.Seq != seq || r.Epoch == 0 {
			t.Fatalf("read %+v, want seq %d", r, seq)
		}
	}
	phone.Send(protocol.Request{Type: protocol.TypeRead, Room: "lobby", Seq: 2})
	expectRead(phone, 2)
	expectRead(laptop, 2)
	laptop.Send(protocol.Request{Type: protocol.TypeRead, Room: "lobby", Seq: 1}) // behind: nothing moves
	phone.Send(protocol.Request{Type: protocol.TypeRead, Room: "lobby", Seq: 99}) // past the last: the last
	expectRead(phone, 3)
	expectRead(laptop, 3)

	tablet := dial(t, url+"?access_token="+is.Token("u1"))
	tablet.Expect("welcome")
	tablet.Expect("join")
	tablet.Expect("history")
	expectRead(tablet, 3)

	guest.Send(protocol.Request{Type: protocol.TypeRead, Room: "lobby", Seq: 1})
	for e := guest.ExpectOneOf("seen", "error"); e.Type != "error" || e.Code != protocol.CodeForbidden; e = guest.ExpectOneOf("seen", "error") {
		if e.Type == "error" {
			t.Fatalf("%+v", e)
		}
	}
	phone.Send(protocol.Request{Type: protocol.TypeRead, Room: "elsewhere", Seq: 1})
	phone.ExpectError(protocol.CodeNotInRoom)
	phone.Send(protocol.Request{Type: protocol.TypeRead, Room: "lobby", Seq: -1})
	phone.ExpectError(protocol.CodeBadRequest)
	if st := hub.Stats(); st.Reads != 2 {
		t.Fatalf("reads %d, want 2", st.Reads)
	}
	// u2, in this small room, sees how far u1 read (not its read events).
	for _, want := range []int64{2, 3} {
		e := other.ExpectOneOf("seen", "message", "presence") // its own messages, and the tablet's arrival
		for e.Type != "seen" {
			e = other.ExpectOneOf("seen", "message", "presence")
		}
		if e.Nick != "u1" || e.User != "u1" || e.Seq != want || e.Room != "lobby" {
			t.Fatalf("seen %+v, want u1 at %d", e, want)
		}
	}
	// u2 heard none of its read events.
	other.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "d"})
	for {
		if e := other.Read(); e.Type == "message" && e.Text == "d" {
			break
		} else if e.Type == "read" {
			t.Fatalf("another user got %+v", e)
		}
	}
}

// TestPresenceGrace: a member whose connection drops and who comes back
// (the same nick) within PresenceGrace is announced neither as leaving
// nor as joining; one that stays away is told as left once the grace is
// over; a leave request is told at once.
func TestPresenceGrace(t *testing.T) {
	t.Parallel()
	const grace = time.Second
	_, _, url := startChat(t, chat.Config{PresenceGrace: grace, PresenceInterval: 20 * time.Millisecond}, engine.Config{})
	a := connect(t, url)
	b := connect(t, url+"?nick=bee")
	for e := a.Read(); !(e.Type == "presence" && slices.Contains(e.Joined, "bee")); e = a.Read() {
	}
	b.Close()
	for e := a.Read(); !(e.Type == "presence" && e.Count == 1); e = a.Read() { // gone, not told
		if slices.Contains(e.Left, "bee") {
			t.Fatalf("told as left at once: %+v", e)
		}
	}
	b2 := connect(t, url+"?nick=bee") // the reload
	a.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "marker"})
	for {
		e := a.Read()
		if e.Type == "presence" && (slices.Contains(e.Left, "bee") || slices.Contains(e.Joined, "bee")) {
			t.Fatalf("the reload was announced: %+v", e)
		}
		if e.Type == "message" && e.Text == "marker" {
			break
		}
	}
	gone := time.Now()
	b2.Close()
	for {
		e := a.Read()
		if e.Type == "presence" && slices.Contains(e.Left, "bee") {
			if d := time.Since(gone); d < grace {
				t.Fatalf("told as left after %v, within the grace", d)
			}
			break
		}
	}
	// With a grace of an hour, a leave request is still told at once (a
	// read waits 20 s at most).
	_, _, url = startChat(t, chat.Config{PresenceGrace: time.Hour, PresenceInterval: 20 * time.Millisecond}, engine.Config{})
	a = connect(t, url)
	c := connect(t, url+"?nick=cee")
	c.Send(protocol.Request{Type: protocol.TypeLeave, Room: "lobby"})
	for {
		if e := a.Read(); e.Type == "presence" && slices.Contains(e.Left, "cee") {
			break
		}
	}
}
