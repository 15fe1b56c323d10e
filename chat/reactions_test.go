package chat_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/protocol"
)

// reactionsUntil reads c's events up to the message with text until, and
// returns the reactions of message seq as the reactions events left them
// ("emoji:count:who,who;..."), and the seq of the last such event.
func reactionsUntil(t *testing.T, c *client, seq int64, until string) (string, int64, int) {
	t.Helper()
	state, last, frames := "", int64(0), 0
	for {
		e := c.Read()
		switch {
		case e.Type == "message" && e.Text == until:
			return state, last, frames
		case e.Type != "reactions":
			continue
		}
		frames++
		last = e.Seq
		for _, m := range e.Messages {
			var mr protocol.MessageReact
			if err := json.Unmarshal(m, &mr); err != nil {
				t.Fatal(err)
			}
			if mr.Seq == seq {
				state = show(mr.Reactions)
			}
		}
	}
}

func show(rs []protocol.ReactionSeen) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%s:%d:%s", r.Emoji, r.Count, strings.Join(r.Who, ",")))
	}
	return strings.Join(parts, ";")
}

// TestReactions: members toggle emoji on a message; the room hears the
// counts and who, coalesced, numbered in the room's log before the next
// message; a joiner gets the counts after its history.
func TestReactions(t *testing.T) {
	t.Parallel()
	hub, _, url := startChat(t, chat.Config{}, engine.Config{})
	a, b := connect(t, url), connect(t, url)
	a.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "ship it?"})
	m := a.Expect("message")
	b.Expect("message")
	for i, r := range []struct {
		c     *client
		emoji string
	}{{b, "👍"}, {a, "👍"}, {a, "🎉"}, {b, "🇫🇷"}, {b, "🇫🇷"}} { // the flag taken back
		r.c.Send(protocol.Request{Type: protocol.TypeReact, Room: "lobby", Seq: m.Seq, Emoji: r.emoji})
		// Two connections: each reaction numbered before the next is sent.
		poll.Until(t, "the reaction numbered", func() bool { return hub.Stats().Published == uint64(i+2) })
	}
	a.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "next"})
	want := fmt.Sprintf("👍:2:%s,%s;🎉:1:%s", b.Nick, a.Nick, a.Nick)
	for _, c := range []*client{a, b} {
		if got, last, _ := reactionsUntil(t, c, m.Seq, "next"); got != want || last != m.Seq+5 {
			t.Fatalf("%s: reactions %q after entry %d, want %q after %d", c.Nick, got, last, want, m.Seq+5)
		}
	}
	j := dial(t, url)
	j.Expect("welcome")
	j.Expect("join")
	j.Expect("history")
	if e := j.Expect("reactions"); e.Seq != 0 || len(e.Messages) != 1 {
		t.Fatalf("a joiner's counts: %+v", e)
	} else {
		var mr protocol.MessageReact
		if err := json.Unmarshal(e.Messages[0], &mr); err != nil || show(mr.Reactions) != want {
			t.Fatalf("a joiner's counts: %s (%v)", e.Messages[0], err)
		}
	}
	for _, tc := range []struct {
		req  protocol.Request
		code protocol.Code
	}{
		{protocol.Request{Type: protocol.TypeReact, Room: "lobby", Seq: m.Seq, Emoji: "lol"}, protocol.CodeBadRequest},
		{protocol.Request{Type: protocol.TypeReact, Room: "lobby", Seq: m.Seq, Emoji: "👍 "}, protocol.CodeBadRequest},
		{protocol.Request{Type: protocol.TypeReact, Room: "lobby", Seq: m.Seq, Emoji: strings.Repeat("👍", 9)}, protocol.CodeBadRequest},
		{protocol.Request{Type: protocol.TypeReact, Room: "lobby", Seq: 99, Emoji: "👍"}, protocol.CodeNotFound},
		{protocol.Request{Type: protocol.TypeReact, Room: "elsewhere", Seq: 1, Emoji: "👍"}, protocol.CodeNotInRoom},
	} {
		j.Send(tc.req)
		j.ExpectError(tc.code)
	}
}

// TestReactionStorm: 390 reactions in a room cost its members a few
// reactions frames, not one each.
func TestReactionStorm(t *testing.T) {
	t.Parallel()
	hub, _, url := startChat(t, chat.Config{RateLimit: -1}, engine.Config{})
	var cs []*client
	for range 4 {
		cs = append(cs, connect(t, url))
	}
	cs[0].Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "vote"})
	m := cs[0].Expect("message")
	for _, c := range cs[1:] {
		c.Expect("message")
	}
	emojis := []string{"👍", "👎", "🎉", "❤️", "😂"}
	const n = 390 // toggles of a client and emoji: 20 of some (taken back), 19 of others (kept)
	for i := range n {
		cs[i%len(cs)].Send(protocol.Request{Type: protocol.TypeReact, Room: "lobby", Seq: m.Seq, Emoji: emojis[i%len(emojis)]})
	}
	// Four connections: their reactions are numbered in any order; "done"
	// comes once all are.
	poll.Until(t, "every reaction numbered", func() bool { return hub.Stats().Published == n+1 })
	cs[0].Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "done"})
	for _, c := range cs {
		got, last, frames := reactionsUntil(t, c, m.Seq, "done")
		if last != m.Seq+n || frames >= n/10 || got == "" {
			t.Fatalf("%s: %d frames for %d reactions (the last after entry %d): %q", c.Nick, frames, n, last, got)
		}
		t.Logf("%s: %d reactions events for %d reactions", c.Nick, frames, n)
	}
	if f := hub.Stats().ReactionFrames; f >= n/10 {
		t.Fatalf("%d reactions frames for %d reactions", f, n)
	}
}
