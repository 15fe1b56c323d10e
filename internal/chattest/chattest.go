// Package chattest holds a blocking chat client for tests: it dials a
// Parley chat endpoint, sends requests and reads events, failing the test
// on anything unexpected.
package chattest

import (
	"context"
	"encoding/json"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/wstest"
	"github.com/parleyhq/parley/protocol"
)

// Event is any server message, decoded.
type Event struct {
	Type      string                  `json:"type"`
	ID        uint64                  `json:"id"`
	Room      string                  `json:"room"`
	Seq       int64                   `json:"seq"`
	From      string                  `json:"from"`
	To        string                  `json:"to"`
	Text      string                  `json:"text"`
	TS        int64                   `json:"ts"`
	Nick      string                  `json:"nick"`
	Old       string                  `json:"old"`
	Count     int                     `json:"count"`
	Members   []string                `json:"members"`
	Truncated bool                    `json:"truncated"`
	Joined    []string                `json:"joined"`
	Left      []string                `json:"left"`
	Renamed   []protocol.Renamed      `json:"renamed"`
	Messages  []json.RawMessage       `json:"messages"`
	Gap       bool                    `json:"gap"`
	Code      protocol.Code           `json:"code"`
	Message   string                  `json:"message"`
	Request   *protocol.ReqInfo       `json:"request"`
	Limits    protocol.Limits         `json:"limits"`
	Epoch     int64                   `json:"epoch"`
	User      string                  `json:"user"`
	Expires   int64                   `json:"expires"`
	System    bool                    `json:"system"`
	FromUser  string                  `json:"from_user"`
	ToUser    string                  `json:"to_user"`
	SID       string                  `json:"sid"`
	Edits     int64                   `json:"edits"`
	Deletes   int64                   `json:"deletes"`
	Mod       bool                    `json:"mod"`
	Edited    int64                   `json:"edited"`
	Deleted   int64                   `json:"deleted"`
	Reply     *protocol.ReplyRef      `json:"reply"`
	Rooms     []protocol.RoomInfo     `json:"rooms"`
	Reactions []protocol.ReactionSeen `json:"reactions"`
	Next      string                  `json:"next"`
	Before    int64                   `json:"before"`
}

// Entries decodes a history event's messages (and edited and deleted
// events) as Events.
func (e Event) Entries(t testing.TB) []Event {
	var out []Event
	for _, m := range e.Messages {
		var ev Event
		if err := json.Unmarshal(m, &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// Texts returns the texts of a history event's messages.
func (e Event) Texts(t testing.TB) []string {
	var out []string
	for _, m := range e.Messages {
		var msg protocol.Message
		if err := json.Unmarshal(m, &msg); err != nil {
			t.Fatal(err)
		}
		out = append(out, msg.Text)
	}
	return out
}

// Client is a blocking chat client for tests.
type Client struct {
	*wstest.Conn
	t    testing.TB
	Nick string // from the welcome, once Connect has read it
	ID   uint64
	SID  string // a guest's sender id, from the welcome
}

// Dial opens a chat connection and reads nothing: the welcome, join and
// history are still to come. The connection closes when the test ends;
// every read has 20 s.
func Dial(t testing.TB, url string) *Client {
	t.Helper()
	return DialFrom(t, url, "")
}

// DialFrom is Dial from the local address ip ("127.0.0.2"; "" any).
func DialFrom(t testing.TB, url, ip string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := &net.Dialer{}
	if ip != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)}
	}
	c, _, err := wstest.DialWith(ctx, d, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &Client{Conn: c, t: t}
}

// Connect dials and reads the welcome, the default room's join and its
// history.
func Connect(t testing.TB, url string) *Client {
	t.Helper()
	return ConnectFrom(t, url, "")
}

// ConnectFrom is Connect from the local address ip ("" any).
func ConnectFrom(t testing.TB, url, ip string) *Client {
	t.Helper()
	cl := DialFrom(t, url, ip)
	w := cl.Expect("welcome")
	cl.Nick, cl.ID, cl.SID = w.Nick, w.ID, w.SID
	cl.Expect("join")
	cl.Expect("history")
	return cl
}

// Send sends v as JSON.
func (c *Client) Send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.WriteText(string(b)); err != nil {
		c.t.Fatal(err)
	}
}

// Read reads the next event.
func (c *Client) Read() Event {
	c.t.Helper()
	_, p, err := c.ReadMessage()
	if err != nil {
		c.t.Fatalf("%s: read: %v", c.Nick, err)
	}
	var e Event
	if err := json.Unmarshal(p, &e); err != nil {
		c.t.Fatalf("%s: not JSON: %q", c.Nick, p)
	}
	return e
}

// Expect reads the next event of type typ, skipping presence and typing
// notices unless typ is one of them; any other event fails the test.
func (c *Client) Expect(typ string) Event {
	c.t.Helper()
	return c.ExpectOneOf(typ)
}

// ExpectOneOf reads the next event of one of types, skipping presence and
// typing notices unless asked for; any other event fails the test.
func (c *Client) ExpectOneOf(types ...string) Event {
	c.t.Helper()
	for {
		e := c.Read()
		if slices.Contains(types, e.Type) {
			return e
		}
		if e.Type == "presence" || e.Type == "typing" {
			continue
		}
		c.t.Fatalf("%s: got %s %+v, want one of %v", c.Nick, e.Type, e, types)
	}
}

// ExpectError reads the next error and checks its code.
func (c *Client) ExpectError(code protocol.Code) Event {
	c.t.Helper()
	e := c.Expect("error")
	if e.Code != code {
		c.t.Fatalf("%s: error %q (%s), want %q", c.Nick, e.Code, e.Message, code)
	}
	return e
}
