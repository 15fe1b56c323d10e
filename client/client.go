// Package client is a Go client of Parley's chat (docs/PROTOCOL.md) for
// backends and bots.
//
// A Client connects as a guest or with a token (refreshed before it
// expires), and stays connected until Close: when a connection drops it
// reconnects with backoff and jitter, to the same server or the next of
// a cluster's, and resumes every room it is in from the last entry it
// saw (join with since and epoch), so the application sees each room's
// entries once, in order. A gap the server can no longer fill comes as a
// History with Gap set; a room whose log began again, as a Reset.
//
// Say gives each message an id and keeps it until the room has it: a
// message said while offline waits for the connection, and one the server
// answers not_delivered or rate_limited, or whose fate a dropped
// connection hid, is said again. The server drops a repeated id, so a
// message is never heard twice. The client paces its requests at the
// rate the server's welcome allows.
//
// Events delivers what the server sends as pointers to package protocol's
// types, plus this package's *Disconnected. All methods are safe for
// concurrent use.
package client

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/parleyhq/parley/protocol"
)

// Errors of the client (a request the server refused is an *Error).
var (
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client: closed")
	// ErrQueueFull: Config.MaxPending messages wait already.
	ErrQueueFull = errors.New("client: too many messages pending")
	// ErrBanned: the server closed the connection with 4003 banned, or
	// refused the handshake with 403: the client does not reconnect.
	ErrBanned = errors.New("client: banned or forbidden")
)

// Error is a request the server refused: its error event's code and
// message (errors.As finds it).
type Error struct {
	Code    protocol.Code
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("parley: %s: %s", e.Code, e.Message) }

// Event is what Events delivers: a pointer to one of package protocol's
// event types (*protocol.Welcome on each connection, *protocol.Message,
// *protocol.Edit for edited and deleted, *protocol.Reactions,
// *protocol.Joined, *protocol.Reset, *protocol.Left, *protocol.Seen,
// *protocol.Read, *protocol.Presence, *protocol.History, *protocol.DM,
// *protocol.Authed, *protocol.Typing, *protocol.NickChanged,
// *protocol.Error, *protocol.RoomList, *protocol.SearchResult), or a
// *Disconnected.
type Event any

// Disconnected tells that a connection ended: Err says why (a
// *websocket.CloseError when the server closed it, with its code and
// reason). Unless the client was closed or banned, it reconnects.
type Disconnected struct {
	Err error
}

// room is a room the client is in, and where it is in its log.
type room struct {
	epoch, last int64 // the last entry delivered, in epoch
	// joining: a join's answer came, its history is next. resumed: the
	// history came; until then the room's messages are not said.
	joining, resumed bool
	// skipAuto: the server's join on connect (Config.Room) of a room the
	// client resumes or left: its join and history are dropped.
	skipAuto, skipHistory bool
}

// say is a message said and not yet stored.
type say struct {
	id, room, text string
	sent           bool       // written on the current connection, no answer yet
	done           chan error // buffered: the room has it (nil), or refused it
}

// waiter is a request waiting for its answer.
type waiter struct {
	id    string
	join  bool // waits across reconnections
	match func(Event) bool
	done  chan error // buffered
}

// Client is a connection to a Parley server that survives reconnections.
type Client struct {
	cfg    Config
	events chan Event
	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	done   chan struct{} // the run goroutine ended

	mu      sync.Mutex
	conn    *conn // the current connection, nil while offline
	nick    string
	user    string
	rooms   map[string]*room
	says    []*say // in the order said
	waiters []*waiter
	retry   *time.Timer // resends what was refused for a while
	attempt int         // retries in a row
	// connectedOnce: a connection was welcomed; before, the room the
	// server joins on connect is adopted.
	connectedOnce bool
	welcomed      chan struct{} // closed at the first welcome
	seq           uint64        // request ids
	err           error         // why the client stopped
}

// New returns a Client for cfg that connects in the background, and
// keeps doing so until Close: it never returns an error but for cfg.
// Dial is New waiting for the first connection.
func New(cfg Config) (*Client, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	go c.run(nil)
	return c, nil
}

func newClient(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{cfg: cfg, events: make(chan Event, cfg.EventBuffer), ctx: ctx, cancel: cancel,
		done: make(chan struct{}), welcomed: make(chan struct{}), nick: cfg.Nick, rooms: map[string]*room{}}, nil
}

// Dial connects to cfg.URL and returns the Client once the server
// welcomed it, or the first connection's error (a handshake refused with
// its status, a Token error, ctx's). The client then stays connected
// until Close.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	first, err := c.dial(ctx, c.cfg.URL)
	if err != nil {
		c.cancel()
		return nil, err
	}
	go c.run(first)
	select {
	case <-c.welcomed:
		return c, nil
	case <-c.done:
		if err := c.Err(); err != nil {
			return nil, err
		}
		return nil, ErrClosed
	case <-ctx.Done():
		_ = c.Close()
		return nil, fmt.Errorf("client: waiting for %s's welcome: %w", c.cfg.URL, ctx.Err())
	}
}

// Events returns the channel of what the server sends, in order. It is
// closed when the client is (Close, or a ban: see Err). Read it
// promptly: while it is full the client does not read from the server,
// and so hears no answer either. A loop reading it that calls Say (which
// waits for the room's answer) should do so on another goroutine, or
// have an EventBuffer larger than the events that may come meanwhile.
func (c *Client) Events() <-chan Event { return c.events }

// Nick returns the client's nick on its last connection.
func (c *Client) Nick() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nick
}

// Err returns why the client stopped: nil while it runs and after Close,
// ErrBanned after a ban.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection (1000) and stops the client: pending
// messages are dropped (their Say returns ErrClosed) and Events is
// closed. It waits for the client's goroutines to end.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// Join joins room and returns the server's answer, once the client is in
// it (offline, when it connects). The room's history and later entries
// follow on Events; after a reconnection the client joins it again and
// gets only what it missed.
func (c *Client) Join(ctx context.Context, name string) (*protocol.Joined, error) {
	var joined *protocol.Joined
	w := c.await(func(ev Event) bool {
		j, ok := ev.(*protocol.Joined)
		if ok && j.Room == name {
			joined = j
		}
		return ok && j.Room == name
	})
	w.join = true
	c.mu.Lock()
	if _, ok := c.rooms[name]; !ok {
		c.rooms[name] = &room{}
	}
	r := c.rooms[name]
	r.skipAuto = false
	if c.conn != nil {
		c.conn.send(c.joinRequest(name, r, w.id))
	}
	c.mu.Unlock()
	if err := c.wait(ctx, w); err != nil {
		return nil, err
	}
	return joined, nil
}

// joinRequest is the join of room r, resuming it if the client was in it.
func (c *Client) joinRequest(name string, r *room, id string) protocol.Request {
	req := protocol.Request{Type: protocol.TypeJoin, ID: id, Room: name}
	if r.epoch != 0 {
		since := r.last
		req.Since, req.Epoch = &since, r.epoch
	}
	return req
}

// Leave leaves room: the client does not join it again on reconnecting.
// Its pending messages there are dropped (their Say returns an error).
func (c *Client) Leave(ctx context.Context, name string) error {
	w := c.await(func(ev Event) bool {
		l, ok := ev.(*protocol.Left)
		return ok && l.Room == name
	})
	c.mu.Lock()
	delete(c.rooms, name)
	c.dropSays(name, fmt.Errorf("client: left room %q", name))
	if c.conn == nil {
		c.mu.Unlock()
		c.unwait(w, nil)
		return nil
	}
	c.conn.send(protocol.Request{Type: protocol.TypeLeave, ID: w.id, Room: name})
	c.mu.Unlock()
	return c.wait(ctx, w)
}

// Say says text in room and returns once the room has it (its message
// came back), or the server refused it (*Error: empty, too_long,
// not_in_room, muted...). Offline, it waits for a connection; answered
// not_delivered or rate_limited, it is said again after a backoff. If
// ctx ends first, Say returns ctx's error and the client stops saying
// it, though a copy already sent may still be heard (once).
func (c *Client) Say(ctx context.Context, room, text string) error {
	s := &say{id: newID(), room: room, text: text, done: make(chan error, 1)}
	c.mu.Lock()
	switch {
	case c.ctx.Err() != nil:
		c.mu.Unlock()
		return ErrClosed
	case len(c.says) >= c.cfg.MaxPending:
		c.mu.Unlock()
		return ErrQueueFull
	}
	c.says = append(c.says, s)
	if r := c.rooms[room]; c.conn != nil && (r == nil || r.resumed) {
		// Not a room the client is in: the server's not_in_room answers.
		s.sent = true
		c.conn.send(protocol.Request{Type: protocol.TypeSay, ID: s.id, Room: room, Text: text})
	}
	c.mu.Unlock()
	select {
	case err := <-s.done:
		return err
	case <-ctx.Done():
		c.mu.Lock()
		c.removeSay(s)
		c.mu.Unlock()
		return ctx.Err()
	}
}

// DM sends text to the guest or user called nick and returns once the
// server delivered it (its copy came back) or refused it. It is not
// said again: a DM has no id to drop a second copy by.
func (c *Client) DM(ctx context.Context, nick, text string) error {
	return c.dm(ctx, protocol.Request{Type: protocol.TypeDM, To: nick, Text: text})
}

// DMUser sends text to every connection of the signed-in user user.
func (c *Client) DMUser(ctx context.Context, user, text string) error {
	return c.dm(ctx, protocol.Request{Type: protocol.TypeDM, User: user, Text: text})
}

func (c *Client) dm(ctx context.Context, req protocol.Request) error {
	w := c.await(func(ev Event) bool {
		d, ok := ev.(*protocol.DM)
		return ok && d.Text == req.Text && (req.To != "" && d.To == req.To || req.User != "" && d.ToUser == req.User) &&
			d.From == c.nick
	})
	req.ID = w.id
	if err := c.sendNow(req); err != nil {
		c.unwait(w, err)
	}
	return c.wait(ctx, w)
}

// SetNick changes the client's nick (a guest's), kept across
// reconnections.
func (c *Client) SetNick(ctx context.Context, nick string) error {
	w := c.await(func(ev Event) bool {
		n, ok := ev.(*protocol.NickChanged)
		return ok && n.Nick == nick
	})
	if err := c.sendNow(protocol.Request{Type: protocol.TypeNick, ID: w.id, Nick: nick}); err != nil {
		c.unwait(w, err)
	}
	return c.wait(ctx, w)
}

// Send sends any other request (edit, delete, react, read, typing,
// history, rooms, search) on the current connection; its answer or error
// comes on Events. Offline, it fails: these requests are worth nothing
// later.
func (c *Client) Send(req protocol.Request) error { return c.sendNow(req) }

func (c *Client) sendNow(req protocol.Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.ctx.Err() != nil:
		return ErrClosed
	case c.conn == nil:
		return errors.New("client: not connected")
	}
	c.conn.send(req)
	return nil
}

// await registers a waiter for an answer matching match, or an error
// answering its request id.
func (c *Client) await(match func(Event) bool) *waiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	w := &waiter{id: fmt.Sprintf("c%d", c.seq), match: match, done: make(chan error, 1)}
	c.waiters = append(c.waiters, w)
	return w
}

// wait waits for w's answer, ctx or Close.
func (c *Client) wait(ctx context.Context, w *waiter) error {
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		c.unwait(w, nil)
		return ctx.Err()
	case <-c.ctx.Done():
		c.unwait(w, nil)
		return ErrClosed
	}
}

// unwait removes w, answering err.
func (c *Client) unwait(w *waiter, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.waiters {
		if x == w {
			c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
			w.done <- err
			return
		}
	}
}

func (c *Client) removeSay(s *say) {
	for i, x := range c.says {
		if x == s {
			c.says = append(c.says[:i], c.says[i+1:]...)
			return
		}
	}
}

// dropSays answers err to the pending messages of room.
func (c *Client) dropSays(name string, err error) {
	kept := c.says[:0]
	for _, s := range c.says {
		if s.room == name {
			s.done <- err
		} else {
			kept = append(kept, s)
		}
	}
	clear(c.says[len(kept):])
	c.says = kept
}

// newID returns a message id: 128 random bits, 32 hex digits (the
// protocol allows 64 of A-Z a-z 0-9 . _ : -).
func newID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// run keeps the client connected until Close, starting with first if
// the caller dialled it.
func (c *Client) run(first *conn) {
	defer close(c.done)
	defer close(c.events)
	defer c.stop()
	backoff := c.cfg.MinBackoff
	urls := append([]string{c.cfg.URL}, c.cfg.Fallbacks...)
	next := 0
	cn := first
	for {
		if cn == nil {
			var err error
			cn, err = c.dial(c.ctx, urls[next%len(urls)])
			next++
			if err != nil {
				if c.ctx.Err() != nil {
					return
				}
				if errors.Is(err, ErrBanned) {
					c.setErr(err)
					return
				}
				c.cfg.Logger.Warn("parley client: connecting", "err", err, "retry", backoff)
				if !c.sleep(&backoff) {
					return
				}
				continue
			}
		}
		welcomed, err := c.serve(cn)
		if welcomed {
			backoff = c.cfg.MinBackoff
		}
		cn = nil
		if c.ctx.Err() != nil {
			return
		}
		if !c.emit(&Disconnected{Err: err}) {
			return
		}
		if websocket.CloseStatus(err) == websocket.StatusCode(protocol.CloseBanned) {
			c.setErr(fmt.Errorf("%w: %w", ErrBanned, err))
			return
		}
		c.cfg.Logger.Info("parley client: disconnected", "err", err, "retry", backoff)
		if !c.sleep(&backoff) {
			return
		}
	}
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

// stop answers every waiter and pending message once the client stops.
func (c *Client) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.err
	if err == nil {
		err = ErrClosed
	}
	for _, s := range c.says {
		s.done <- err
	}
	c.says = nil
	for _, w := range c.waiters {
		w.done <- err
	}
	c.waiters = nil
	if c.retry != nil {
		c.retry.Stop()
	}
	c.cancel()
}

// sleep waits for a jittered *backoff (its upper half) and doubles it;
// false if the client was closed meanwhile.
func (c *Client) sleep(backoff *time.Duration) bool {
	d := *backoff/2 + rand.N(*backoff/2+1)
	*backoff = min(2**backoff, c.cfg.MaxBackoff)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// emit delivers ev; false if the client was closed first.
func (c *Client) emit(ev Event) bool {
	select {
	case c.events <- ev:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// dial opens a connection to u.
func (c *Client) dial(ctx context.Context, u string) (*conn, error) {
	c.mu.Lock()
	nick := c.nick
	c.mu.Unlock()
	target, _ := url.Parse(u) // checked by withDefaults
	q := target.Query()
	if nick != "" && c.cfg.Token == nil {
		q.Set("nick", nick)
	}
	if c.cfg.Room != "" {
		q.Set("room", c.cfg.Room)
	}
	target.RawQuery = q.Encode()
	hdr := c.cfg.Header.Clone()
	if hdr == nil {
		hdr = http.Header{}
	}
	if c.cfg.Token != nil {
		tok, err := c.cfg.Token(ctx)
		if err != nil {
			return nil, fmt.Errorf("client: token for %s: %w", u, err)
		}
		hdr.Set("Authorization", "Bearer "+tok)
	}
	ws, resp, err := websocket.Dial(ctx, target.String(), &websocket.DialOptions{HTTPClient: c.cfg.HTTPClient, HTTPHeader: hdr})
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusForbidden {
			return nil, fmt.Errorf("%w: %s answered %s", ErrBanned, u, resp.Status)
		}
		return nil, fmt.Errorf("client: dialing %s: %w", u, err)
	}
	ws.SetReadLimit(16 << 20)
	return newConn(c, ws), nil
}
