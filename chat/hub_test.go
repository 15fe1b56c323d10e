package chat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wsproto"
	"github.com/parleyhq/parley/internal/wstest"
	"github.com/parleyhq/parley/protocol"
)

func TestWelcome(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{}, engine.Config{})
	cl := dial(t, url)
	w := cl.Expect("welcome")
	if w.ID == 0 || w.Nick != "guest-"+itoa(w.ID) || w.Room != "lobby" || w.Limits.MaxTextLength != 2000 ||
		w.Limits.RatePerSecond != 10 || w.Limits.HistorySize != 100 || w.Limits.MaxNickLength != 24 ||
		w.Epoch <= 0 || w.Epoch > time.Now().UnixMilli() {
		t.Fatalf("welcome %+v", w)
	}
	j := cl.Expect("join")
	if j.Room != "lobby" || j.Count != 1 || !slices.Equal(j.Members, []string{w.Nick}) || j.Seq != 0 || j.Epoch < w.Epoch || j.Epoch > time.Now().UnixMilli() {
		t.Fatalf("join %+v", j)
	}
	if h := cl.Expect("history"); h.Room != "lobby" || len(h.Messages) != 0 {
		t.Fatalf("history %+v", h)
	}
}

func TestSayInOrderWithSequenceNumbers(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{}, engine.Config{})
	a, b := connect(t, url), connect(t, url)
	before := time.Now().UnixMilli()
	for _, text := range []string{"one", "two", "three"} {
		a.Send(protocol.Request{Type: "say", Room: "lobby", Text: text})
	}
	for _, c := range []*client{a, b} {
		for i, text := range []string{"one", "two", "three"} {
			m := c.Expect("message")
			if m.Room != "lobby" || m.Seq != int64(i+1) || m.From != a.Nick || m.Text != text ||
				m.TS < before || m.TS > time.Now().UnixMilli() {
				t.Fatalf("%s got %+v, want %q with seq %d", c.Nick, m, text, i+1)
			}
		}
	}
}

func TestPlainTextFallback(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{}, engine.Config{})
	a, b := connect(t, url), connect(t, url)
	for _, text := range []string{"hello there", "[1, 2]", `"a json string"`} {
		if err := a.WriteText(text); err != nil {
			t.Fatal(err)
		}
		if m := b.Expect("message"); m.Text != text || m.Room != "lobby" || m.From != a.Nick {
			t.Fatalf("plain %q arrived as %+v", text, m)
		}
	}
	if err := a.WriteText("   "); err != nil {
		t.Fatal(err)
	}
	a.Expect("message") // its own earlier messages come first
	a.Expect("message")
	a.Expect("message")
	a.ExpectError(protocol.CodeEmpty)
}

func TestRooms(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{MaxRooms: 3}, engine.Config{})
	a, b := connect(t, url), connect(t, url)
	a.Send(protocol.Request{Type: "join", Room: "golang"})
	if j := a.Expect("join"); j.Room != "golang" || j.Count != 1 {
		t.Fatalf("join %+v", j)
	}
	a.Expect("history")
	b.Send(protocol.Request{Type: "join", Room: "golang"})
	if j := b.Expect("join"); j.Count != 2 || !slices.Equal(j.Members, sorted(a.Nick, b.Nick)) {
		t.Fatalf("join %+v", j)
	}
	b.Expect("history")
	a.Send(protocol.Request{Type: "say", Room: "golang", Text: "gophers only"})
	for _, c := range []*client{a, b} {
		if m := c.Expect("message"); m.Room != "golang" || m.Seq != 1 {
			t.Fatalf("%+v", m)
		}
	}
	// Sequence numbers are per room.
	a.Send(protocol.Request{Type: "say", Room: "lobby", Text: "everyone"})
	if m := b.Expect("message"); m.Room != "lobby" || m.Seq != 1 {
		t.Fatalf("%+v", m)
	}
	a.Expect("message")

	b.Send(protocol.Request{Type: "leave", Room: "golang", ID: "r1"})
	if l := b.Expect("leave"); l.Room != "golang" {
		t.Fatalf("leave %+v", l)
	}
	b.Send(protocol.Request{Type: "say", Room: "golang", Text: "hello?", ID: "r2"})
	if e := b.ExpectError(protocol.CodeNotInRoom); e.Request == nil || e.Request.ID != "r2" || e.Request.Type != "say" {
		t.Fatalf("error does not name its request: %+v", e)
	}
	b.Send(protocol.Request{Type: "leave", Room: "golang"})
	b.ExpectError(protocol.CodeNotInRoom)

	for _, bad := range []string{"", "a b", "-x", strings.Repeat("r", 33), "x/y", "<script>"} {
		a.Send(protocol.Request{Type: "join", Room: bad})
		a.ExpectError(protocol.CodeBadRoom)
	}
	a.Send(protocol.Request{Type: "join", Room: "third"}) // lobby, golang, third: at the limit
	a.Expect("join")
	a.Expect("history")
	a.Send(protocol.Request{Type: "join", Room: "fourth"})
	a.ExpectError(protocol.CodeTooManyRooms)
	a.Send(protocol.Request{Type: "join", Room: "golang"}) // already in: the state again, no error
	a.Expect("join")
	a.Expect("history")
}

// The hub holds at most MaxRoomsTotal rooms, making room by removing the
// one empty longest, and a client makes at most RoomCreateRate rooms a
// minute. (One client process made 51,463 empty rooms in 30 s before.)
func TestRoomCaps(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{MaxRoomsTotal: 3, RoomCreateRate: 3, RateLimit: -1}, engine.Config{})
	a := chattest.ConnectFrom(t, url, "127.0.0.2") // made the lobby: 1 room, 2 creations left for its address
	b := chattest.ConnectFrom(t, url, "127.0.0.3") // budgets are per address (TestRoomBudgetPerAddress)
	for _, name := range []string{"r1", "r2"} {
		b.Send(protocol.Request{Type: "join", Room: name})
		b.Expect("join")
		b.Expect("history")
	}
	b.Send(protocol.Request{Type: "join", Room: "r3"}) // 3 rooms, none empty
	b.ExpectError(protocol.CodeRoomLimit)
	b.Send(protocol.Request{Type: "leave", Room: "r1"})
	b.Expect("leave")
	a.Send(protocol.Request{Type: "join", Room: "r3"}) // r1 is empty: it goes
	a.Expect("join")
	a.Expect("history")
	b.Send(protocol.Request{Type: "leave", Room: "r2"})
	b.Expect("leave")
	b.Send(protocol.Request{Type: "join", Room: "r4"}) // b has made 2 rooms of its 3...
	b.Expect("join")
	b.Expect("history")
	b.Send(protocol.Request{Type: "leave", Room: "r4"})
	b.Expect("leave")
	b.Send(protocol.Request{Type: "join", Room: "r5"}) // ...and this is a fourth within the minute
	b.ExpectError(protocol.CodeRateLimited)
	b.Send(protocol.Request{Type: "join", Room: "r3"}) // joining an existing room is free
	b.Expect("join")
	b.Expect("history")
}

func TestHistoryAndResume(t *testing.T) {
	t.Parallel()
	// ResumeWindow off: the history is the last HistorySize messages.
	_, _, url := startChat(t, chat.Config{HistorySize: 5, ResumeWindow: -1}, engine.Config{})
	a := connect(t, url)
	for i := 1; i <= 7; i++ {
		a.Send(protocol.Request{Type: "say", Room: "lobby", Text: "m" + itoa(uint64(i))})
		a.Expect("message")
	}
	// A newcomer gets the last 5 on join.
	n := dial(t, url)
	n.Expect("welcome")
	if j := n.Expect("join"); j.Seq != 7 {
		t.Fatalf("join %+v", j)
	}
	if h := n.Expect("history"); !slices.Equal(h.Texts(t), []string{"m3", "m4", "m5", "m6", "m7"}) || h.Gap {
		t.Fatalf("history %v gap %v", h.Texts(t), h.Gap)
	}
	// A reconnecting client asks for what it missed since seq 5.
	since := int64(5)
	n.Send(protocol.Request{Type: "leave", Room: "lobby"})
	n.Expect("leave")
	n.Send(protocol.Request{Type: "join", Room: "lobby", Since: &since})
	n.Expect("join")
	if h := n.Expect("history"); !slices.Equal(h.Texts(t), []string{"m6", "m7"}) || h.Gap {
		t.Fatalf("resume: %v gap %v", h.Texts(t), h.Gap)
	}
	// Since 1: messages 2 is no longer kept: a gap.
	since = 1
	n.Send(protocol.Request{Type: "join", Room: "lobby", Since: &since})
	n.Expect("join")
	if h := n.Expect("history"); !slices.Equal(h.Texts(t), []string{"m3", "m4", "m5", "m6", "m7"}) || !h.Gap {
		t.Fatalf("resume past the ring: %v gap %v", h.Texts(t), h.Gap)
	}
	// Paging back.
	n.Send(protocol.Request{Type: "history", Room: "lobby", Before: 6, Limit: 2})
	if h := n.Expect("history"); !slices.Equal(h.Texts(t), []string{"m4", "m5"}) {
		t.Fatalf("history before 6: %v", h.Texts(t))
	}
	n.Send(protocol.Request{Type: "history", Room: "nowhere"})
	n.ExpectError(protocol.CodeNotInRoom)
}

// A busy room keeps what the ResumeWindow covers beyond HistorySize: a
// client that comes back within it misses nothing, while a newcomer still
// gets HistorySize messages. (Before the window, a loaded machine's
// reconnections outlasted the 100-message ring and lost messages.)
func TestResumeWindow(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{HistorySize: 5, ResumeWindow: time.Minute, RateLimit: -1}, engine.Config{})
	a := connect(t, url)
	var want []string
	for i := 1; i <= 40; i++ {
		want = append(want, "m"+itoa(uint64(i)))
		a.Send(protocol.Request{Type: "say", Room: "lobby", Text: want[i-1]})
		a.Expect("message")
	}
	n := connect(t, url) // connect reads the newcomer's join and history
	since := int64(3)
	n.Send(protocol.Request{Type: "join", Room: "lobby", Since: &since})
	n.Expect("join")
	if h := n.Expect("history"); !slices.Equal(h.Texts(t), want[3:]) || h.Gap {
		t.Fatalf("resume since 3: %v gap %v", h.Texts(t), h.Gap)
	}
	n.Send(protocol.Request{Type: "leave", Room: "lobby"})
	n.Expect("leave")
	n.Send(protocol.Request{Type: "join", Room: "lobby"})
	n.Expect("join")
	if h := n.Expect("history"); !slices.Equal(h.Texts(t), want[35:]) {
		t.Fatalf("newcomer's history: %v", h.Texts(t))
	}
}

// HistoryBytes bounds a room's history whatever the window: the oldest
// messages go, and a resume from before them is told of the gap.
func TestHistoryBytes(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{HistorySize: 50, HistoryBytes: 4096, MaxTextLength: 1000, RateLimit: -1}, engine.Config{})
	a := connect(t, url)
	for i := range 10 {
		a.Send(protocol.Request{Type: "say", Room: "lobby", Text: strings.Repeat(string(rune('a'+i)), 900)})
		a.Expect("message")
	}
	since := int64(0)
	a.Send(protocol.Request{Type: "join", Room: "lobby", Since: &since})
	a.Expect("join")
	h := a.Expect("history")
	size := 0
	for _, m := range h.Messages {
		size += len(m)
	}
	texts := h.Texts(t)
	if size > 4096 || len(texts) < 3 || !h.Gap || texts[len(texts)-1] != strings.Repeat("j", 900) {
		t.Fatalf("history of %d bytes, %d messages, gap %v", size, len(texts), h.Gap)
	}
}

// A room full of the largest legal messages replays to newcomers without
// tripping the slow-consumer limit: text is not HTML-escaped (2,000 '<'
// used to become 12 KB) and the replay is bounded in bytes. Before, 3 of
// 20 newcomers were closed 1008 right after joining.
func TestLargeHistoryReplay(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{RateLimit: -1}, engine.Config{})
	a := connect(t, url)
	text := strings.Repeat("<", 2000)
	for range 100 {
		a.Send(protocol.Request{Type: "say", Room: "lobby", Text: text})
	}
	for range 100 {
		if m := a.Expect("message"); m.Text != text {
			t.Fatalf("text came back as %.40q...", m.Text)
		}
	}
	for range 20 {
		n := dial(t, url)
		n.Expect("welcome")
		n.Expect("join")
		h := n.Expect("history")
		if size := len(h.Messages) * len(h.Messages[0]); len(h.Messages) < 25 || size > chat.DefaultHistoryBytes {
			t.Fatalf("replay of %d messages, %d bytes", len(h.Messages), size)
		}
		// Still open: it answers a request.
		n.Send(protocol.Request{Type: "history", Room: "lobby", Limit: 1})
		n.Expect("history")
	}
}

// Nicks that look alike are one nick (PRECIS, then the TR 39 confusable
// skeleton), and invisible, filler, control and direction characters are
// refused. Each of these was accepted beside "alice" or a guest before.
func TestLookAlikeNicks(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{RateLimit: -1}, engine.Config{})
	a, b := connect(t, url), connect(t, url)
	a.Send(protocol.Request{Type: "nick", Nick: "alice"})
	a.Expect("nick")
	for _, tc := range []struct {
		nick string
		code protocol.Code
	}{
		{"\u0430lice", protocol.CodeNickTaken},                     // Cyrillic a
		{"\uff41\uff4c\uff49\uff43\uff45", protocol.CodeNickTaken}, // full width
		{"ALICE", protocol.CodeNickTaken},
		{"a1ice", protocol.CodeNickTaken},        // 1 reads as l
		{"alice\u3164", protocol.CodeBadNick},    // Hangul filler
		{"\u3164\u3164", protocol.CodeBadNick},   // fillers only
		{"alice\u200b", protocol.CodeBadNick},    // zero-width space
		{"bob\u200d", protocol.CodeBadNick},      // zero-width joiner
		{"a\u202eexe.txt", protocol.CodeBadNick}, // right-to-left override
		{"x\u00ad", protocol.CodeBadNick},        // soft hyphen
		{"gu\u0435st-1", protocol.CodeBadNick},   // a guest look-alike (Cyrillic e)
		{"GUEST-7", protocol.CodeBadNick},
	} {
		b.Send(protocol.Request{Type: "nick", Nick: tc.nick})
		if e := b.ExpectError(tc.code); e.Code != tc.code {
			t.Errorf("%+q: %s", tc.nick, e.Code)
		}
	}
	// A full-width nick is shown folded; a DM by any look-alike of a nick
	// reaches its holder.
	b.Send(protocol.Request{Type: "nick", Nick: "\uff42\uff4f\uff42"})
	if n := b.Expect("nick"); n.Nick != "bob" {
		t.Fatalf("nick %+v, want bob", n)
	}
	b.Send(protocol.Request{Type: "dm", To: "\u0430lice", Text: "hi"})
	if d := a.Expect("dm"); d.From != "bob" || d.To != "alice" || d.Text != "hi" {
		t.Fatalf("dm %+v", d)
	}
}

func TestNicks(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{}, engine.Config{})
	a, b := connect(t, url), connect(t, url)
	a.Send(protocol.Request{Type: "nick", Nick: "Alice"})
	if n := a.Expect("nick"); n.Nick != "Alice" || n.Old != a.Nick {
		t.Fatalf("nick %+v", n)
	}
	// b learns of it through presence.
	for {
		p := b.Expect("presence")
		if len(p.Renamed) == 1 && p.Renamed[0] == (protocol.Renamed{From: a.Nick, To: "Alice"}) {
			break
		}
	}
	a.Nick = "Alice"
	for _, taken := range []string{"alice", "ALICE"} {
		b.Send(protocol.Request{Type: "nick", Nick: taken})
		b.ExpectError(protocol.CodeNickTaken)
	}
	for _, bad := range []string{"", "a b", ".dot", strings.Repeat("n", 25), "guest-1", "x<y>", "tab\t"} {
		b.Send(protocol.Request{Type: "nick", Nick: bad})
		b.ExpectError(protocol.CodeBadNick)
	}
	a.Send(protocol.Request{Type: "say", Room: "lobby", Text: "hi"})
	if m := b.Expect("message"); m.From != "Alice" {
		t.Fatalf("message from %q, want Alice", m.From)
	}
	// A nick is freed when its holder leaves.
	a.Close()
	poll.Until(t, "Alice's nick to be freed", func() bool {
		b.Send(protocol.Request{Type: "nick", Nick: "alice"})
		for {
			e := b.Read()
			switch e.Type {
			case "nick":
				return true
			case "error":
				return false
			}
		}
	})
}

func TestDirectMessages(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{MaxTextLength: 50}, engine.Config{})
	a, b, c := connect(t, url), connect(t, url), connect(t, url)
	a.Send(protocol.Request{Type: "dm", To: strings.ToUpper(b.Nick), Text: "psst @127.0.0.1 not garbled"})
	for _, x := range []*client{b, a} { // recipient, then the sender's copy
		d := x.Expect("dm")
		if d.From != a.Nick || d.To != b.Nick || d.Text != "psst @127.0.0.1 not garbled" || d.TS == 0 {
			t.Fatalf("%s got %+v", x.Nick, d)
		}
	}
	// To yourself: one copy.
	a.Send(protocol.Request{Type: "dm", To: a.Nick, Text: "note to self"})
	a.Expect("dm")
	a.Send(protocol.Request{Type: "say", Room: "lobby", Text: "marker"})
	if m := a.Expect("message"); m.Text != "marker" {
		t.Fatalf("after a dm to self: %+v", m)
	}
	a.Send(protocol.Request{Type: "dm", To: "nobody", Text: "hello?"})
	a.ExpectError(protocol.CodeUnknownNick)
	a.Send(protocol.Request{Type: "dm", To: b.Nick, Text: " "})
	a.ExpectError(protocol.CodeEmpty)
	a.Send(protocol.Request{Type: "dm", To: b.Nick, Text: strings.Repeat("x", 51)})
	a.ExpectError(protocol.CodeTooLong)
	// c saw none of it but the marker.
	if m := c.Expect("message"); m.Text != "marker" {
		t.Fatalf("c got %+v", m)
	}
}

// A text that opens a JSON object is a request: if it does not decode
// strictly it is refused with bad_request naming what is wrong, and never
// said as plain text (a mistyped dm used to reach the whole lobby).
func TestStrictRequests(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{RateLimit: -1}, engine.Config{})
	a, bystander := connect(t, url), connect(t, url)
	for _, tc := range []struct{ in, want string }{
		{`{"type":"dm","to":"bob","text":"secret","id":7}`, `field "id"`},
		{`{"type":5}`, `field "type"`},
		{`{"Type":"say","room":"lobby","text":"x"}`, `unknown field "Type"`},
		{`{"type":"say","room":"lobby","TEXT":"x"}`, `unknown field "TEXT"`},
		{`{"type":"say","room":"lobby","text":"x","text":"y"}`, `duplicate`},
		{`{"type":"say","room":"lobby","text":"x","colour":"red"}`, `unknown field "colour"`},
		{`{"type":"history","room":"lobby","limit":1.5}`, `field "limit"`},
		{`{"type":"join","room":"lobby","since":"5"}`, `field "since"`},
		{`{"type":"say","room":"lobby","text":"x"} trailing`, `malformed JSON`},
		{`{"type":"dm","to":"bob","text":"secret"`, `malformed JSON`},
		{"{\"type\":\"say\",\"room\":\"lobby\",\"text\":\"a\\udc00\"}", `malformed JSON`},
		{`{not json`, `malformed JSON`},
	} {
		if err := a.WriteText(tc.in); err != nil {
			t.Fatal(err)
		}
		if e := a.ExpectError(protocol.CodeBadRequest); !strings.Contains(e.Message, tc.want) {
			t.Errorf("%s: error %q, want it to name %q", tc.in, e.Message, tc.want)
		}
	}
	// The bystander heard none of it: the next thing it gets is this.
	a.Send(protocol.Request{Type: "say", Room: "lobby", Text: "only this"})
	if m := bystander.Expect("message"); m.Text != "only this" {
		t.Fatalf("bystander got %+v", m)
	}
}

// Text with controls or bidi reordering characters is refused, not relayed
// (a right-to-left override disguised txt.exe as exe.txt); tabs, newlines
// and the plain direction marks pass.
func TestBadText(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{RateLimit: -1}, engine.Config{})
	a, b := connect(t, url), connect(t, url)
	for _, text := range []string{"photo\u202egpj.exe", "a\u2066b\u2069", "bell\a", "esc\x1b[31mred", "nul\x00", "c1\u0085"} {
		a.Send(protocol.Request{Type: "say", Room: "lobby", Text: text})
		a.ExpectError(protocol.CodeBadText)
		a.Send(protocol.Request{Type: "dm", To: b.Nick, Text: text})
		a.ExpectError(protocol.CodeBadText)
	}
	ok := "line one\n\tline two \u200fשלום\u200e ok"
	a.Send(protocol.Request{Type: "say", Room: "lobby", Text: ok})
	if m := b.Expect("message"); m.Text != ok {
		t.Fatalf("got %q", m.Text)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{}, engine.Config{})
	a := connect(t, url)
	a.Send(map[string]any{"room": "lobby", "text": "no type", "id": "x1"})
	if e := a.ExpectError(protocol.CodeBadRequest); e.Request == nil || e.Request.ID != "x1" {
		t.Fatalf("%+v", e)
	}
	a.Send(map[string]any{"type": "shout", "text": "hey"})
	a.ExpectError(protocol.CodeUnknownType)
	if err := a.WriteFrame(wsproto.OpBinary, true, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	a.ExpectError(protocol.CodeBinary)
	a.Send(protocol.Request{Type: "say", Room: "lobby", Text: strings.Repeat("y", 2001)})
	a.ExpectError(protocol.CodeTooLong)
}

// Typing notices count against the rate like every request: a client that
// floods them is refused, then closed with 1008 (they used to skip the
// limit, so such a flood was never stopped).
func TestTypingIsRateLimited(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{RateLimit: 1, RateBurst: 3, RateHardLimit: 5}, engine.Config{})
	a := connect(t, url)
	for range 3 {
		a.Send(protocol.Request{Type: "typing", Room: "lobby"})
	}
	a.Send(protocol.Request{Type: "typing", Room: "lobby"})
	a.ExpectError(protocol.CodeRateLimited)
	for range 20 {
		a.Send(protocol.Request{Type: "typing", Room: "lobby"})
	}
	for {
		_, _, err := a.ReadMessage()
		if ce, ok := err.(*wstest.CloseError); ok {
			if ce.Code != 1008 || ce.Reason != protocol.ReasonRateLimit {
				t.Fatalf("closed with %d %q", ce.Code, ce.Reason)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{RateLimit: 1, RateBurst: 3, RateHardLimit: 5}, engine.Config{})
	a := connect(t, url)
	for range 3 {
		a.Send(protocol.Request{Type: "say", Room: "lobby", Text: "ok"})
		a.Expect("message")
	}
	a.Send(protocol.Request{Type: "say", ID: "m-4", Room: "lobby", Text: "too fast"})
	if e := a.ExpectError(protocol.CodeRateLimited); e.Request == nil || e.Request.ID != "m-4" || e.Request.Type != "say" {
		t.Fatalf("the refusal does not name the request: %+v", e.Request)
	}
	// Keep pushing: past the hard limit the server closes with 1008.
	for range 10 {
		a.Send(protocol.Request{Type: "say", Room: "lobby", Text: "spam"})
	}
	for {
		_, p, err := a.ReadMessage()
		if ce, ok := err.(*wstest.CloseError); ok {
			if ce.Code != 1008 || ce.Reason != protocol.ReasonRateLimit {
				t.Fatalf("closed with %d %q", ce.Code, ce.Reason)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var e event
		_ = json.Unmarshal(p, &e)
		if e.Type != "error" && e.Type != "presence" {
			t.Fatalf("while rate limited: %s", p)
		}
	}
}

func TestTypingAndPresence(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{PresenceInterval: 20 * time.Millisecond}, engine.Config{})
	a := connect(t, url)
	b := connect(t, url)
	// a learns that b joined, in a coalesced presence message.
	for {
		p := a.Expect("presence")
		if slices.Contains(p.Joined, b.Nick) {
			if p.Count != 2 {
				t.Fatalf("presence %+v", p)
			}
			break
		}
	}
	a.Send(protocol.Request{Type: "typing", Room: "lobby"})
	if ty := b.Expect("typing"); ty.Nick != a.Nick || ty.Room != "lobby" {
		t.Fatalf("typing %+v", ty)
	}
	b.Close()
	for {
		p := a.Expect("presence")
		if slices.Contains(p.Left, b.Nick) {
			if p.Count != 1 {
				t.Fatalf("presence %+v", p)
			}
			break
		}
	}
}

// TestPresenceBackoff: a room that keeps changing gets presence less
// often, and nothing is lost: every join reaches the members, and the last
// count is the room's.
func TestPresenceBackoff(t *testing.T) {
	t.Parallel()
	const interval, joiners = 20 * time.Millisecond, 40
	hub, _, url := startChat(t, chat.Config{PresenceInterval: interval}, engine.Config{})
	a := connect(t, url)
	began := time.Now()
	want := []string{a.Nick} // its own join is news to the room too
	for range joiners {
		c := connect(t, url)
		want = append(want, c.Nick)
		time.Sleep(interval / 4) // a steady trickle of joins, several per interval
	}
	storm := time.Since(began)
	var seen []string
	for {
		p := a.Expect("presence")
		seen = append(seen, p.Joined...)
		if p.Count == joiners+1 {
			break
		}
	}
	slices.Sort(seen)
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Fatalf("joins seen %v, want %v", seen, want)
	}
	// Without the backoff a room changing at every tick gets one message per
	// interval; with it, fewer than half as many.
	if sent, ticks := hub.Stats().PresenceSent, uint64(storm/interval); sent > ticks/2+2 {
		t.Fatalf("%d presence messages over %d intervals of steady joins: no backoff", sent, ticks)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg   chat.Config
		field string
	}{
		{chat.Config{DefaultRoom: "bad room"}, "DefaultRoom"},
		{chat.Config{HistorySize: -1}, "HistorySize"},
		{chat.Config{RateLimit: -2}, "RateLimit"},
		{chat.Config{PresenceInterval: time.Millisecond}, "PresenceInterval"},
		{chat.Config{PresenceInterval: time.Second, LargeRoomCounts: 500 * time.Millisecond}, "LargeRoomCounts"},
		{chat.Config{HistoryMaxAge: time.Millisecond}, "HistoryMaxAge"},
		{chat.Config{PrivateRooms: []string{"a b"}}, "PrivateRooms"},
		{chat.Config{Guests: chat.GuestsRefused}, "Guests"},
	} {
		err := tc.cfg.Validate()
		var ce *chat.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, chat.ErrInvalidConfig) {
			t.Errorf("%+v: %v, want a ConfigError for %s", tc.cfg, err, tc.field)
		}
	}
	// A long presence interval with the default count period is valid.
	if err := (&chat.Config{PresenceInterval: time.Hour}).Validate(); err != nil {
		t.Errorf("PresenceInterval 1h with the default LargeRoomCounts: %v", err)
	}
}

func TestEmptyRoomKeepsHistoryForTTL(t *testing.T) {
	t.Parallel()
	hub, _, url := startChat(t, chat.Config{HistoryTTL: 300 * time.Millisecond, PresenceInterval: 20 * time.Millisecond}, engine.Config{})
	a := connect(t, url)
	a.Send(protocol.Request{Type: "join", Room: "brief"})
	a.Expect("join")
	a.Expect("history")
	a.Send(protocol.Request{Type: "say", Room: "brief", Text: "remember me"})
	a.Expect("message")
	a.Send(protocol.Request{Type: "leave", Room: "brief"})
	a.Expect("leave")
	rooms := hub.Stats().Rooms
	// Within the TTL the empty room keeps its history.
	a.Send(protocol.Request{Type: "join", Room: "brief"})
	a.Expect("join")
	if h := a.Expect("history"); !slices.Equal(h.Texts(t), []string{"remember me"}) {
		t.Fatalf("history within the TTL: %v", h.Texts(t))
	}
	a.Send(protocol.Request{Type: "leave", Room: "brief"})
	a.Expect("leave")
	poll.Until(t, "the empty room to be removed", func() bool { return hub.Stats().Rooms == rooms-1 })
	a.Send(protocol.Request{Type: "join", Room: "brief"})
	if j := a.Expect("join"); j.Seq != 0 {
		t.Fatalf("a removed room came back with seq %d", j.Seq)
	}
	if h := a.Expect("history"); len(h.Messages) != 0 {
		t.Fatalf("a removed room kept %v", h.Texts(t))
	}
}

// Joiners of a room above LargeRoom get the exact count and a short,
// cached sample of names.
func TestLargeRoomJoinSample(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{LargeRoom: 25}, engine.Config{})
	var last event
	for range 30 {
		cl := dial(t, url)
		cl.Expect("welcome")
		last = cl.Expect("join")
		cl.Expect("history")
	}
	if last.Count != 30 || !last.Truncated || len(last.Members) == 0 || len(last.Members) > 20 {
		t.Fatalf("join of the 30th member: count %d, truncated %v, %d names", last.Count, last.Truncated, len(last.Members))
	}
}

// TestRequestIDs: any request's id is checked as a say's is, and echoed in
// the error answering it.
func TestRequestIDs(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{}, engine.Config{})
	a := connect(t, url)
	for _, typ := range []string{protocol.TypeJoin, protocol.TypeHistory, protocol.TypeSay} {
		a.Send(protocol.Request{Type: typ, ID: "bad id!", Room: "lobby", Text: "x"})
		if e := a.ExpectError(protocol.CodeBadRequest); e.Request == nil || e.Request.ID != "bad id!" {
			t.Fatalf("%s with a bad id: %+v", typ, e)
		}
	}
	a.Send(protocol.Request{Type: protocol.TypeLeave, ID: "ok.1", Room: "nowhere"})
	if e := a.ExpectError(protocol.CodeNotInRoom); e.Request.ID != "ok.1" {
		t.Fatalf("%+v", e)
	}
}

// TestHandshakeNick: a guest that asks for a nick with ?nick= starts with
// it (its room hears it join by that name, not guest-N then a rename); a
// taken one leaves it a guest, told nick_taken after the welcome; a bad
// one is refused at the handshake.
func TestHandshakeNick(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{PresenceInterval: 20 * time.Millisecond}, engine.Config{})
	watcher := connect(t, url)
	c := dial(t, url+"?nick=alice")
	if w := c.Expect("welcome"); w.Nick != "alice" {
		t.Fatalf("welcome nick %q", w.Nick)
	}
	if j := c.Expect("join"); j.Nick != "alice" {
		t.Fatalf("join nick %q", j.Nick)
	}
	for {
		p := watcher.Expect("presence")
		if len(p.Renamed) > 0 || slices.ContainsFunc(p.Joined, func(n string) bool { return strings.HasPrefix(n, "guest-") && n != watcher.Nick }) {
			t.Fatalf("the room heard a guest and a rename: %+v", p)
		}
		if slices.Contains(p.Joined, "alice") {
			break
		}
	}
	second := dial(t, url+"?nick=Alice")
	if w := second.Expect("welcome"); !strings.HasPrefix(w.Nick, "guest-") {
		t.Fatalf("a taken nick: welcome %q", w.Nick)
	}
	if e := second.ExpectError(protocol.CodeNickTaken); e.Request == nil || e.Request.Type != protocol.TypeNick {
		t.Fatalf("%+v", e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, resp, err := wstest.Dial(ctx, url+"?nick=a%20b", nil); err == nil || resp == nil || resp.StatusCode != 400 {
		t.Fatalf("a bad nick: %v %v", resp, err)
	}

	// Where guests keep their guest nick (a server with a key), the nick
	// asked for is refused after the welcome, as a nick request would be.
	is := authtest.New(t)
	_, _, keyed := startChat(t, chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsAllowed}, engine.Config{})
	g := dial(t, keyed+"?nick=alice")
	if w := g.Expect("welcome"); !strings.HasPrefix(w.Nick, "guest-") {
		t.Fatalf("welcome %q", w.Nick)
	}
	g.ExpectError(protocol.CodeForbidden)
}

// TestTypingInDMs: a typing notice to a nick reaches that client alone,
// without a room; to a nick nobody holds, it is refused.
func TestTypingInDMs(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{}, engine.Config{})
	a, b := connect(t, url), connect(t, url)
	a.Send(protocol.Request{Type: protocol.TypeTyping, To: b.Nick})
	if e := b.Expect("typing"); e.Nick != a.Nick || e.Room != "" {
		t.Fatalf("%+v", e)
	}
	a.Send(protocol.Request{Type: protocol.TypeTyping, To: "nobody"})
	a.ExpectError(protocol.CodeUnknownNick)
	a.Send(protocol.Request{Type: protocol.TypeTyping, To: b.Nick, Room: "lobby"})
	a.ExpectError(protocol.CodeBadRequest)
}

// TestHistoryMaxAge: a room's messages leave its history once older than
// HistoryMaxAge, even in a room nobody speaks in any more.
func TestHistoryMaxAge(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{HistoryMaxAge: time.Second}, engine.Config{})
	c := connect(t, url)
	said := time.Now()
	c.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "soon gone"})
	c.Expect("message")
	for {
		c.Send(protocol.Request{Type: protocol.TypeHistory, Room: "lobby"})
		h := c.Expect("history")
		age := time.Since(said)
		if len(h.Messages) == 0 {
			if age < time.Second {
				t.Fatalf("the message left the history %v after it was said, before HistoryMaxAge", age)
			}
			break
		}
		if age > 10*time.Second {
			t.Fatalf("the message is still in the history %v after it was said", age)
		}
		<-time.After(200 * time.Millisecond) // polling the clock: the age limit is about time passing
	}
}

// TestBackendRoomsAreSwept: a room the server API opened (even to read its
// presence or history) is an empty room like any other: evicted first at
// MaxRoomsTotal, swept after HistoryTTL. They used to stay forever, and
// two API calls left clients getting room_limit.
func TestBackendRoomsAreSwept(t *testing.T) {
	t.Parallel()
	t.Run("evicted", func(t *testing.T) {
		t.Parallel()
		h, _, url := startChat(t, chat.Config{MaxRoomsTotal: 3, RateLimit: -1}, engine.Config{})
		a := connect(t, url) // the lobby: 1 room
		if _, err := h.Presence(context.Background(), "p"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.History(context.Background(), "q", 0); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"r1", "r2"} { // each evicts one the API opened
			a.Send(protocol.Request{Type: "join", Room: name})
			a.Expect("join")
			a.Expect("history")
		}
		if n := h.Stats().Rooms; n != 3 {
			t.Fatalf("%d rooms, want 3", n)
		}
	})
	t.Run("swept", func(t *testing.T) {
		t.Parallel()
		h, _, url := startChat(t, chat.Config{HistoryTTL: 50 * time.Millisecond, PresenceInterval: 20 * time.Millisecond}, engine.Config{})
		connect(t, url) // the lobby, kept: it has a member
		if err := h.Publish(context.Background(), "p", "hello", chat.Sender{}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Presence(context.Background(), "q"); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, "the API's rooms swept", func() bool { return h.Stats().Rooms == 1 })
	})
}

// TestDedupeBySender: a message said again with the same request id by
// the same sender is heard once: a user on any of its connections, a guest
// from its address (a reconnect keeps it; its nick may change). Another
// sender's message with that id is heard. Ids used to be a room's alone,
// and another client reusing one was silently not heard.
func TestDedupeBySender(t *testing.T) {
	t.Parallel()
	is := authtest.New(t)
	_, _, url := startChat(t, chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsAllowed, RateLimit: -1}, engine.Config{})
	a, b := chattest.ConnectFrom(t, url, "127.0.0.2"), chattest.ConnectFrom(t, url, "127.0.0.3")
	user := func() *client {
		c := dial(t, url+"?access_token="+is.Token("u1"))
		c.Expect("welcome")
		c.Expect("join")
		c.Expect("history")
		return c
	}
	u1, u1b := user(), user()
	var heard []string
	// say has c say text under id, and waits until b hears wait.
	say := func(c *client, text, id, wait string) {
		t.Helper()
		c.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: text, ID: id})
		if wait == "" {
			return
		}
		for {
			_, raw, err := b.ReadMessage()
			if err != nil {
				t.Fatalf("waiting for %q: %v (heard %q)", wait, err, heard)
			}
			var m struct{ Type, Text string }
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("%s: %v", raw, err)
			}
			if m.Type == "message" {
				heard = append(heard, m.Text)
				if m.Text == wait {
					return
				}
			}
		}
	}
	say(a, "a once", "m1", "a once")
	say(a, "a twice", "m1", "")                       // a resend: dropped...
	say(a, "a next", "m2", "a next")                  // ...and this one, after it on the same connection, is heard
	back := chattest.ConnectFrom(t, url, "127.0.0.2") // a reconnect: another connection, another nick
	say(back, "a after a reconnect", "m1", "")
	say(back, "a back", "m3", "a back")
	say(b, "b, the same id", "m1", "b, the same id")
	say(u1, "u1 once", "m1", "u1 once")
	say(u1b, "u1 on its other connection", "m1", "") // the same user: dropped
	say(u1b, "u1 next", "m4", "u1 next")
	want := []string{"a once", "a next", "a back", "b, the same id", "u1 once", "u1 next"}
	if !slices.Equal(heard, want) {
		t.Fatalf("heard %q, want %q", heard, want)
	}
}

// TestResumeSinceBounds: a resume since the largest sequence number there
// is gets nothing (it used to overflow and replay the whole history); a
// negative since is a bad request, not a replay of everything.
func TestResumeSinceBounds(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{RateLimit: -1}, engine.Config{})
	a := connect(t, url)
	for i := 1; i <= 3; i++ {
		a.Send(protocol.Request{Type: "say", Room: "lobby", Text: "m" + itoa(uint64(i))})
		a.Expect("message")
	}
	a.Send(protocol.Request{Type: "leave", Room: "lobby"})
	a.Expect("leave")
	for _, since := range []int64{math.MaxInt64, math.MaxInt64 - 1, 3, 1000} {
		a.Send(protocol.Request{Type: "join", Room: "lobby", Since: &since})
		a.Expect("join")
		if h := a.Expect("history"); len(h.Messages) != 0 || h.Gap {
			t.Fatalf("since %d: %v gap %v, want nothing", since, h.Texts(t), h.Gap)
		}
		a.Send(protocol.Request{Type: "leave", Room: "lobby"})
		a.Expect("leave")
	}
	since := int64(-1)
	a.Send(protocol.Request{Type: "join", Room: "lobby", Since: &since})
	if e := a.ExpectError(protocol.CodeBadRequest); !strings.Contains(e.Message, "since") {
		t.Fatalf("%+v", e)
	}
}

// TestRoomBudgetPerAddress: room creations are counted per address and per
// network (/24, IPv6 /48), not per connection: a client that reconnects
// does not get a fresh budget (one address could make ~200 rooms a second
// that way), and many addresses of one network share a larger one.
func TestRoomBudgetPerAddress(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{RoomCreateRate: 3, RateLimit: -1}, engine.Config{})
	join := func(c *client, room string) chattest.Event {
		c.Send(protocol.Request{Type: "join", Room: room})
		e := c.ExpectOneOf("join", "error")
		if e.Type == "join" {
			c.Expect("history")
		}
		return e
	}
	a := chattest.ConnectFrom(t, url, "127.0.0.2") // makes the lobby: 2 creations left
	for _, r := range []string{"r1", "r2"} {
		if e := join(a, r); e.Type != "join" {
			t.Fatalf("%s: %+v", r, e)
		}
	}
	a.Close()
	again := chattest.ConnectFrom(t, url, "127.0.0.2")
	if e := join(again, "r3"); e.Code != protocol.CodeRateLimited || !strings.Contains(e.Message, "address") {
		t.Fatalf("a reconnected client's fourth room in a minute: %+v, want rate_limited per address", e)
	}
	// The network 127.0.0.0/24 may make 4 x 3 = 12 a minute: 3 are spent
	// (the lobby, r1, r2; the refused r3 spent nothing); 9 more from three
	// fresh addresses fit, and the 13th is refused for the network.
	made, refused := 0, 0
	for i, ip := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		c := chattest.ConnectFrom(t, url, ip)
		for j := range 3 {
			switch e := join(c, fmt.Sprintf("n%d-%d", i, j)); {
			case e.Type == "join":
				made++
			case e.Code == protocol.CodeRateLimited && strings.Contains(e.Message, "network"):
				refused++
			default:
				t.Fatalf("%+v", e)
			}
		}
	}
	if made != 9 || refused != 0 {
		t.Fatalf("%d made, %d refused of 9, want all made", made, refused)
	}
	c := chattest.ConnectFrom(t, url, "127.0.0.6")
	if e := join(c, "over"); e.Code != protocol.CodeRateLimited || !strings.Contains(e.Message, "network") {
		t.Fatalf("the network's 13th room in a minute: %+v, want rate_limited per network", e)
	}
	if e := join(chattest.ConnectFrom(t, url, "127.0.1.2"), "elsewhere"); e.Type != "join" {
		t.Fatalf("another network: %+v", e)
	}
}

// TestEvictionOrder: at MaxRoomsTotal, the empty room that goes first is
// one nobody ever said anything in, of the creator with the most rooms;
// a quiet room's history, kept for its returning members, goes last.
func TestEvictionOrder(t *testing.T) {
	t.Parallel()
	_, _, url := startChat(t, chat.Config{MaxRoomsTotal: 5, RoomCreateRate: -1, RateLimit: -1}, engine.Config{})
	x := chattest.ConnectFrom(t, url, "127.0.0.2") // the lobby
	join := func(c *client, room string) {
		c.Send(protocol.Request{Type: "join", Room: room})
		c.Expect("join")
		c.Expect("history")
	}
	leave := func(c *client, room string) {
		c.Send(protocol.Request{Type: "leave", Room: room})
		c.Expect("leave")
	}
	join(x, "quiet")
	x.Send(protocol.Request{Type: "say", Room: "quiet", Text: "see you tomorrow"})
	x.Expect("message")
	leave(x, "quiet") // empty longest, but used
	h := chattest.ConnectFrom(t, url, "127.0.0.3")
	for _, r := range []string{"h1", "h2"} {
		join(h, r)
		leave(h, r)
	}
	y := chattest.ConnectFrom(t, url, "127.0.0.4")
	join(y, "y1")
	leave(y, "y1") // 5 rooms: lobby, quiet, h1, h2, y1
	n := chattest.ConnectFrom(t, url, "127.0.0.5")
	join(n, "new1") // evicts h1 or h2: never used, and h made 2
	join(n, "new2") // the other
	join(n, "new3") // then y1: never used
	n.Send(protocol.Request{Type: "join", Room: "quiet"})
	n.Expect("join")
	if hist := n.Expect("history"); !slices.Equal(hist.Texts(t), []string{"see you tomorrow"}) {
		t.Fatalf("the quiet room's history: %v (it was evicted before never-used rooms)", hist.Texts(t))
	}
}

// TestJoinRaceSpendsOneCreation: clients of one network joining new rooms
// at once make each once, and only those creations are charged: each
// joiner used to take a creation before finding the room made by another,
// and racing joiners spent the network's budget and were refused
// rate_limited (a 600-client load test lost a third of its joins so).
func TestJoinRaceSpendsOneCreation(t *testing.T) {
	t.Parallel()
	// An address may make 10 rooms a minute, a network 40: enough for
	// these 10 rooms, whoever makes them, unless racers are charged too.
	_, _, url := startChat(t, chat.Config{RoomCreateRate: 10, RateLimit: -1, MaxRooms: 20}, engine.Config{})
	chattest.ConnectFrom(t, url, "127.0.1.2") // the lobby, made from another network
	var cs []*client
	for i := range 100 {
		cs = append(cs, chattest.ConnectFrom(t, url, fmt.Sprintf("127.0.0.%d", i+2)))
	}
	var all []byte
	began := time.Now() // of the network's budget
	for r := range 10 { // 10 rooms, each joined by all 100 at once
		all = wsproto.AppendMaskedFrame(all[:0], wsproto.OpText, true, fmt.Appendf(nil, `{"type":"join","room":"r%d"}`, r), [4]byte{1, 2, 3, 4})
		for _, c := range cs {
			if err := c.WriteRaw(all); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, c := range cs {
		for range 10 {
			if e := c.ExpectOneOf("join", "error"); e.Type != "join" {
				t.Fatalf("client %d: %+v", i, e)
			}
			c.Expect("history")
		}
	}
	// The network made 10 of its 40: 30 more from fresh addresses (10
	// each), then rate_limited for the network. Its budget refills at 40
	// a minute meanwhile: on a busy machine these take seconds, and each
	// second is two-thirds of a room more.
	made := 10
	for i := range 8 {
		c := chattest.ConnectFrom(t, url, fmt.Sprintf("127.0.0.%d", 200+i))
		for r := range 10 {
			c.Send(protocol.Request{Type: protocol.TypeJoin, Room: fmt.Sprintf("x%d-%d", i, r)})
			e := c.ExpectOneOf("join", "error")
			refill := int(math.Ceil(time.Since(began).Minutes() * 40))
			switch {
			case e.Type == "join" && made < 40+refill:
				made++
				c.Expect("history")
			case e.Type == "join":
				t.Fatalf("the network's room %d, %v after its first: %+v, want rate_limited", made+1, time.Since(began), e)
			case made < 40 || e.Code != protocol.CodeRateLimited || !strings.Contains(e.Message, "network"):
				t.Fatalf("the network's room %d: %+v, want a join up to its 40th, then rate_limited", made+1, e)
			default:
				return
			}
		}
	}
	t.Fatal("the network was never refused")
}
