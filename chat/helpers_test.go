package chat_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/internal/wstest"
)

func TestMain(m *testing.M) { testserver.Main(m) }

func quiet() *slog.Logger { return testserver.Logger() }

// startChat runs a server with a Hub for cfg on /ws and returns the hub, the
// server and the URL.
func startChat(t testing.TB, cfg chat.Config, ecfg engine.Config) (*chat.Hub, *engine.Server, string) {
	t.Helper()
	cfg.Logger = quiet()
	hub, err := chat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, url := testserver.Start(t, ecfg, hub)
	return hub, srv, url
}

// event is any server message.
type event struct {
	Type      string            `json:"type"`
	ID        uint64            `json:"id"`
	Room      string            `json:"room"`
	Seq       int64             `json:"seq"`
	From      string            `json:"from"`
	To        string            `json:"to"`
	Text      string            `json:"text"`
	TS        int64             `json:"ts"`
	Nick      string            `json:"nick"`
	Old       string            `json:"old"`
	Count     int               `json:"count"`
	Members   []string          `json:"members"`
	Truncated bool              `json:"truncated"`
	Joined    []string          `json:"joined"`
	Left      []string          `json:"left"`
	Renamed   []chat.Renamed    `json:"renamed"`
	Messages  []json.RawMessage `json:"messages"`
	Gap       bool              `json:"gap"`
	Code      string            `json:"code"`
	Message   string            `json:"message"`
	Request   *chat.ReqInfo     `json:"request"`
	Limits    chat.Limits       `json:"limits"`
	Epoch     int64             `json:"epoch"`
}

// texts returns the texts of a history event's messages.
func (e event) texts(t testing.TB) []string {
	var out []string
	for _, m := range e.Messages {
		var msg chat.Message
		if err := json.Unmarshal(m, &msg); err != nil {
			t.Fatal(err)
		}
		out = append(out, msg.Text)
	}
	return out
}

type client struct {
	*wstest.Conn
	t    testing.TB
	nick string
	id   uint64
}

// dial opens a chat connection and reads nothing: the welcome, join and
// history are still to come. The connection closes when the test ends.
func dial(t testing.TB, url string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := wstest.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{Conn: c, t: t}
}

// connect dials and reads the welcome, the default room's join and its
// history.
func connect(t testing.TB, url string) *client {
	t.Helper()
	cl := dial(t, url)
	w := cl.expect("welcome")
	cl.nick, cl.id = w.Nick, w.ID
	cl.expect("join")
	cl.expect("history")
	return cl
}

func (c *client) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.WriteText(string(b)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) read() event {
	c.t.Helper()
	_, p, err := c.ReadMessage()
	if err != nil {
		c.t.Fatalf("%s: read: %v", c.nick, err)
	}
	var e event
	if err := json.Unmarshal(p, &e); err != nil {
		c.t.Fatalf("%s: not JSON: %q", c.nick, p)
	}
	return e
}

// expect reads the next event of type typ, skipping presence and typing
// notices unless typ is one of them; any other event fails the test.
func (c *client) expect(typ string) event {
	c.t.Helper()
	for {
		e := c.read()
		if e.Type == typ {
			return e
		}
		if e.Type == "presence" || e.Type == "typing" {
			continue
		}
		c.t.Fatalf("%s: got %s %+v, want %s", c.nick, e.Type, e, typ)
	}
}

// expectError reads the next error and checks its code.
func (c *client) expectError(code string) event {
	c.t.Helper()
	e := c.expect("error")
	if e.Code != code {
		c.t.Fatalf("%s: error %q (%s), want %q", c.nick, e.Code, e.Message, code)
	}
	return e
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func sorted(s ...string) []string { slices.Sort(s); return s }

// waitFor polls cond until it holds, for at most 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
