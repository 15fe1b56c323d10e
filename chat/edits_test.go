package chat_test

import (
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/protocol"
)

// TestEditAndDelete: a sender edits and deletes its own messages, every
// member gets the edited and deleted events with the room's next
// sequence numbers, nobody else may change them, and a joiner's history
// (and a resume) holds the edited text, the tombstone and the events.
func TestEditAndDelete(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{}, engine.Config{})
	a, b := connect(t, url), connect(t, url)
	if a.SID == "" || a.SID == b.SID {
		t.Fatalf("guests' sender ids %q and %q", a.SID, b.SID)
	}
	say := func(c *client, text string) {
		t.Helper()
		c.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: text})
		for _, r := range []*client{a, b} {
			if m := r.Expect("message"); m.Text != text || m.SID != c.SID {
				t.Fatalf("%s got %+v", r.Nick, m)
			}
		}
	}
	say(a, "helo")   // 1
	say(b, "hi all") // 2

	a.Send(protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: 1, Text: "hello"})
	for _, r := range []*client{a, b} {
		if e := r.Expect("edited"); e.Seq != 3 || e.Edits != 1 || e.Text != "hello" || e.From != a.Nick || e.SID != a.SID || e.TS == 0 {
			t.Fatalf("%s got %+v", r.Nick, e)
		}
	}
	for _, tc := range []struct {
		c    *client
		req  protocol.Request
		code protocol.Code
	}{
		{b, protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: 1, Text: "mine now"}, protocol.CodeForbidden},
		{b, protocol.Request{Type: protocol.TypeDelete, Room: "lobby", Seq: 1}, protocol.CodeForbidden},
		{a, protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: 2, Text: "x"}, protocol.CodeForbidden},
		{a, protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: 3, Text: "x"}, protocol.CodeNotFound}, // an edit is no message
		{a, protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: 99, Text: "x"}, protocol.CodeNotFound},
		{a, protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: 0, Text: "x"}, protocol.CodeBadRequest},
		{a, protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: 1, Text: " "}, protocol.CodeEmpty},
		{a, protocol.Request{Type: protocol.TypeEdit, Room: "elsewhere", Seq: 1, Text: "x"}, protocol.CodeNotInRoom},
		{a, protocol.Request{Type: protocol.TypeDelete, Room: "lobby", Seq: 1, Text: "x"}, protocol.CodeBadRequest},
		{a, protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "re", Reply: 99}, protocol.CodeNotFound},
		{a, protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "re", Reply: -1}, protocol.CodeBadRequest},
	} {
		tc.c.Send(tc.req)
		if e := tc.c.ExpectError(tc.code); e.Request == nil || e.Request.Type != tc.req.Type {
			t.Fatalf("%+v: %+v", tc.req, e)
		}
	}

	b.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "welcome back", Reply: 1})
	for _, r := range []*client{a, b} {
		if m := r.Expect("message"); m.Seq != 4 || m.Reply == nil || *m.Reply != (protocol.ReplyRef{Seq: 1, From: a.Nick, Excerpt: "hello"}) {
			t.Fatalf("%s got %+v (reply %+v)", r.Nick, m, m.Reply)
		}
	}
	a.Send(protocol.Request{Type: protocol.TypeDelete, Room: "lobby", Seq: 1})
	for _, r := range []*client{a, b} {
		if e := r.Expect("deleted"); e.Seq != 5 || e.Deletes != 1 || e.Text != "" || e.Mod || e.SID != a.SID {
			t.Fatalf("%s got %+v", r.Nick, e)
		}
	}
	a.Send(protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: 1, Text: "back"})
	a.ExpectError(protocol.CodeNotFound)
	b.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "x", Reply: 1})
	b.ExpectError(protocol.CodeNotFound)

	// A joiner sees message 1 as a tombstone, and the reply without what
	// it quoted; the edit's and the delete's events follow where they were.
	c := dial(t, url)
	c.Expect("welcome")
	c.Expect("join")
	got := c.Expect("history").Entries(t)
	if len(got) != 5 {
		t.Fatalf("history of %d: %+v", len(got), got)
	}
	if m := got[0]; m.Type != "message" || m.Seq != 1 || m.Text != "" || m.Deleted == 0 || m.Edited == 0 || m.From != a.Nick {
		t.Fatalf("message 1 in the history: %+v", m)
	}
	if e := got[2]; e.Type != "edited" || e.Seq != 3 || e.Edits != 1 || e.Text != "" { // the deleted text goes from its edits too
		t.Fatalf("entry 3: %+v", e)
	}
	if m := got[3]; m.Type != "message" || m.Reply == nil || m.Reply.Seq != 1 || m.Reply.Excerpt != "" {
		t.Fatalf("the reply in the history: %+v (%+v)", m, m.Reply)
	}
	if e := got[4]; e.Type != "deleted" || e.Seq != 5 || e.Deletes != 1 {
		t.Fatalf("entry 5: %+v", e)
	}

	// A guest that reconnects is another sender: its old lines are not
	// its own.
	a2 := connect(t, url)
	a2.Send(protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: 2, Text: "x"})
	a2.ExpectError(protocol.CodeForbidden)

	// A resume from seq 3 gets what came after it, edits included.
	c.Send(protocol.Request{Type: protocol.TypeJoin, Room: "lobby", Since: new(int64(3))})
	c.Expect("join")
	if h := c.Expect("history").Entries(t); len(h) != 2 || h[0].Seq != 4 || h[1].Type != "deleted" {
		t.Fatalf("resume from 3: %+v", h)
	}
}

// TestEditWindow: past EditWindow a message may no longer be edited or
// deleted by its sender; a moderator (a moderate claim for the room)
// deletes anyone's, at any time, and its delete says so.
func TestEditWindow(t *testing.T) {
	t.Parallel()
	is := authtest.New(t)
	_, _, url := startChat(t, chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsAllowed, EditWindow: 50 * time.Millisecond}, engine.Config{})
	a := connect(t, url)
	said := time.Now()
	a.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "regret"})
	a.Expect("message")
	poll.Until(t, "the edit window to pass", func() bool { return time.Since(said) > 100*time.Millisecond })
	a.Send(protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: 1, Text: "x"})
	a.ExpectError(protocol.CodeTooLate)
	a.Send(protocol.Request{Type: protocol.TypeDelete, Room: "lobby", Seq: 1})
	a.ExpectError(protocol.CodeTooLate)

	plain := connect(t, url+"?access_token="+is.Token("u1"))
	plain.Send(protocol.Request{Type: protocol.TypeDelete, Room: "lobby", Seq: 1})
	plain.ExpectError(protocol.CodeForbidden)
	claims := authtest.Claims("mod1")
	claims.Moderate = []string{"lobby"}
	mod := connect(t, url+"?access_token="+is.Sign(claims))
	mod.Send(protocol.Request{Type: protocol.TypeDelete, Room: "lobby", Seq: 1})
	for _, r := range []*client{a, plain, mod} {
		if e := r.Expect("deleted"); e.Deletes != 1 || !e.Mod || e.User != "mod1" {
			t.Fatalf("%s got %+v", r.Nick, e)
		}
	}
}

// TestUserEditsAnywhere: a signed-in user's messages are its own on any
// of its connections; another user with the same nick claim owns none of
// them.
func TestUserEditsAnywhere(t *testing.T) {
	t.Parallel()
	is := authtest.New(t)
	_, _, url := startChat(t, chat.Config{Verifier: is.Verifier()}, engine.Config{})
	phone := connect(t, url+"?access_token="+is.Token("u1"))
	laptop := connect(t, url+"?access_token="+is.Token("u1"))
	phone.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "typo"})
	phone.Expect("message")
	laptop.Expect("message")
	laptop.Send(protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: 1, Text: "fixed"})
	if e := phone.Expect("edited"); e.Text != "fixed" || e.User != "u1" || e.SID != "" {
		t.Fatalf("%+v", e)
	}
	laptop.Expect("edited")
	claims := authtest.Claims("u2")
	claims.Nick = "u1"
	other := connect(t, url+"?access_token="+is.Sign(claims))
	other.Send(protocol.Request{Type: protocol.TypeDelete, Room: "lobby", Seq: 1})
	other.ExpectError(protocol.CodeForbidden)
}

// TestForgedEdit: an edit or delete from the bus that names a message of
// another sender, or a later one, is dropped: members see nothing, the
// history keeps the message.
func TestForgedEdit(t *testing.T) {
	t.Parallel()
	mb := chat.NewMemoryBroker()
	hub, _, url := startChat(t, chat.Config{Broker: mb}, engine.Config{})
	a := connect(t, url)
	a.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "mine"})
	a.Expect("message")
	for _, forged := range []string{
		`{"edits":1,"from":"eve","sid":"AAAAAAAAAAA","text":"pwned","ts":1}`,
		`{"deletes":1,"from":"eve","sid":"AAAAAAAAAAA","text":"","ts":1}`,
		`{"deletes":1,"from":"eve","text":"","ts":1}`,
		`{"edits":9,"from":"eve","sid":"` + a.SID + `","text":"later","ts":1}`,
	} {
		done := make(chan error, 1)
		mb.Publish("lobby", []byte(forged), "", func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	a.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "after"})
	if m := a.Expect("message"); m.Text != "after" || m.Seq != 6 {
		t.Fatalf("after the forged entries: %+v", m)
	}
	a.Send(protocol.Request{Type: protocol.TypeHistory, Room: "lobby"})
	if h := a.Expect("history").Entries(t); len(h) != 2 || h[0].Text != "mine" || h[0].Edited != 0 {
		t.Fatalf("history %+v", h)
	}
	if d := hub.Stats().Dropped["message"]; d != 4 {
		t.Fatalf("dropped %d, want 4", d)
	}
}
