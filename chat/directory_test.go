package chat_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/protocol"
)

// TestRoomDirectory: rooms are listed by name with their member counts,
// found by a part of their name, paged; a private room only to those
// who may join it.
func TestRoomDirectory(t *testing.T) {
	t.Parallel()
	is := authtest.New(t)
	_, _, url := startChat(t, chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsAllowed, PrivateRooms: []string{"vip-*"}}, engine.Config{})
	claims := authtest.Claims("u1")
	claims.Rooms = []string{"vip-*"}
	insider := connect(t, url+"?access_token="+is.Sign(claims))
	guest := connect(t, url)
	for _, room := range []string{"a-team", "B-Team", "vip-lounge"} {
		insider.Send(protocol.Request{Type: protocol.TypeJoin, Room: room})
		insider.Expect("join")
		insider.Expect("history")
	}
	list := func(c *client, req protocol.Request) ([]string, string) {
		t.Helper()
		req.Type = protocol.TypeRooms
		c.Send(req)
		e := c.ExpectOneOf("rooms")
		var got []string
		for _, r := range e.Rooms {
			got = append(got, fmt.Sprintf("%s:%d", r.Room, r.Count))
		}
		return got, e.Next
	}
	if got, next := list(guest, protocol.Request{}); !slices.Equal(got, []string{"B-Team:1", "a-team:1", "lobby:2"}) || next != "" {
		t.Fatalf("a guest's directory: %v, next %q", got, next)
	}
	if got, _ := list(insider, protocol.Request{Q: "TEAM"}); !slices.Equal(got, []string{"B-Team:1", "a-team:1"}) {
		t.Fatalf("found by part of the name: %v", got)
	}
	if got, _ := list(insider, protocol.Request{Q: "lounge"}); !slices.Equal(got, []string{"vip-lounge:1"}) {
		t.Fatalf("the insider's private room: %v", got)
	}
	var pages []string
	after := ""
	for {
		got, next := list(insider, protocol.Request{Limit: 2, After: after})
		pages = append(pages, strings.Join(got, ","))
		if next == "" {
			break
		}
		after = next
	}
	if want := []string{"B-Team:1,a-team:1", "lobby:2,vip-lounge:1"}; !slices.Equal(pages, want) {
		t.Fatalf("pages %q, want %q", pages, want)
	}
	guest.Send(protocol.Request{Type: protocol.TypeRooms, Q: strings.Repeat("x", 65)})
	guest.ExpectError(protocol.CodeBadRequest)
}

// TestSearch: a room's history is searched by text, case folded, newest
// last, paged back with before; deleted messages are not found.
func TestSearch(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{}, engine.Config{})
	c := connect(t, url)
	for _, text := range []string{"Apple pie", "banana", "apple tart", "APPLE juice", "cherry", "apple cider"} {
		c.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: text})
		c.Expect("message")
	}
	c.Send(protocol.Request{Type: protocol.TypeDelete, Room: "lobby", Seq: 3}) // apple tart
	c.Expect("deleted")
	search := func(req protocol.Request) ([]string, int64) {
		t.Helper()
		req.Type, req.Room = protocol.TypeSearch, "lobby"
		c.Send(req)
		e := c.Expect("search")
		return e.Texts(t), e.Before
	}
	if got, before := search(protocol.Request{Q: "apple"}); !slices.Equal(got, []string{"Apple pie", "APPLE juice", "apple cider"}) || before != 0 {
		t.Fatalf("search: %q, before %d", got, before)
	}
	got, before := search(protocol.Request{Q: "apple", Limit: 2})
	if !slices.Equal(got, []string{"APPLE juice", "apple cider"}) || before != 4 {
		t.Fatalf("first page: %q, before %d", got, before)
	}
	if got, before := search(protocol.Request{Q: "apple", Limit: 2, Before: before}); !slices.Equal(got, []string{"Apple pie"}) || before != 0 {
		t.Fatalf("second page: %q, before %d", got, before)
	}
	for _, req := range []protocol.Request{{Type: protocol.TypeSearch, Room: "lobby"}, {Type: protocol.TypeSearch, Room: "lobby", Q: strings.Repeat("a", 65)}} {
		c.Send(req)
		c.ExpectError(protocol.CodeBadRequest)
	}
	c.Send(protocol.Request{Type: protocol.TypeSearch, Room: "elsewhere", Q: "x"})
	c.ExpectError(protocol.CodeNotInRoom)
}
