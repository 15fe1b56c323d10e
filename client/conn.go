package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/parleyhq/parley/protocol"
	"golang.org/x/time/rate"
)

// errConnectionLost answers the requests a dropped connection took with
// it (but joins, which wait for the next connection, and messages, said
// again).
var errConnectionLost = errors.New("client: connection lost before the answer")

// conn is one WebSocket connection of a Client: the client's run
// goroutine reads it (serve) and a goroutine of its own writes it, paced
// at the rate the server allows.
type conn struct {
	c  *Client
	ws *websocket.Conn

	mu   sync.Mutex
	out  [][]byte      // frames to write, in order
	wake chan struct{} // out is not empty
	dead chan struct{} // serve returned

	// Only under Client.mu:
	unwanted map[string]bool // rooms the server joined on connect that the client had left
	refresh  *time.Timer     // fetches a fresh token before expiry
	limits   protocol.Limits
}

func newConn(c *Client, ws *websocket.Conn) *conn {
	return &conn{c: c, ws: ws, wake: make(chan struct{}, 1), dead: make(chan struct{}), unwanted: map[string]bool{}}
}

// send queues req for writing. Called with Client.mu held, so frames go
// out in the order the client's state decided them.
func (cn *conn) send(req protocol.Request) {
	b, err := json.Marshal(req)
	if err != nil {
		return // a Request always encodes
	}
	cn.mu.Lock()
	cn.out = append(cn.out, b)
	cn.mu.Unlock()
	select {
	case cn.wake <- struct{}{}:
	default:
	}
}

// write writes queued frames until the connection dies, or closes it
// cleanly (1000) when the client is closed.
func (cn *conn) write(limit *rate.Limiter) {
	ctx := cn.c.ctx
	for {
		select {
		case <-cn.wake:
		case <-cn.dead:
			return
		case <-ctx.Done():
			_ = cn.ws.Close(websocket.StatusNormalClosure, "")
			return
		}
		cn.mu.Lock()
		batch := cn.out
		cn.out = nil
		cn.mu.Unlock()
		for _, b := range batch {
			if limit != nil && limit.Wait(ctx) != nil {
				break // closed: the next round closes the connection
			}
			wctx, cancel := context.WithTimeout(ctx, cn.c.cfg.WriteTimeout)
			err := cn.ws.Write(wctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				_ = cn.ws.CloseNow()
				break
			}
		}
	}
}

// limiter paces requests below the server's limits, so the client is not
// refused for its rate: a little under the rate, two under the burst (a
// network may bunch frames sent apart).
func limiter(l protocol.Limits) *rate.Limiter {
	if l.RatePerSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(l.RatePerSecond*0.95), max(1, l.RateBurst-2))
}

// typed is the type of a frame.
type typed struct {
	Type string `json:"type"`
}

// entryRef is what the client needs of a history's entry.
type entryRef struct {
	Seq int64  `json:"seq"`
	ID  string `json:"id"`
}

// serve reads cn until it ends, and says whether the server welcomed it.
func (c *Client) serve(cn *conn) (welcomed bool, err error) {
	defer func() {
		close(cn.dead)
		_ = cn.ws.CloseNow()
		c.disconnected(cn)
	}()
	for {
		_, data, err := cn.ws.Read(context.Background()) // Close closes the connection
		if err != nil {
			return welcomed, err
		}
		var t typed
		if err := json.Unmarshal(data, &t); err != nil {
			return welcomed, fmt.Errorf("client: a frame that is no JSON object: %w", err)
		}
		ev, err := decode(t.Type, data)
		if err != nil {
			return welcomed, err
		}
		if ev == nil {
			continue // a type this client does not know: a newer server's
		}
		if w, ok := ev.(*protocol.Welcome); ok {
			welcomed = true
			go cn.write(c.welcome(cn, w))
		} else if !c.handle(cn, ev) {
			continue
		}
		if !c.emit(ev) {
			return welcomed, ErrClosed
		}
	}
}

// decode returns the event a frame of type typ holds.
func decode(typ string, data []byte) (Event, error) {
	var ev Event
	switch typ {
	case protocol.EventWelcome:
		ev = new(protocol.Welcome)
	case protocol.EventMessage:
		ev = new(protocol.Message)
	case protocol.EventEdited, protocol.EventDeleted:
		ev = new(protocol.Edit)
	case protocol.EventReactions:
		ev = new(protocol.Reactions)
	case protocol.EventJoin:
		ev = new(protocol.Joined)
	case protocol.EventReset:
		ev = new(protocol.Reset)
	case protocol.EventLeave:
		ev = new(protocol.Left)
	case protocol.EventSeen:
		ev = new(protocol.Seen)
	case protocol.EventRead:
		ev = new(protocol.Read)
	case protocol.EventPresence:
		ev = new(protocol.Presence)
	case protocol.EventHistory:
		ev = new(protocol.History)
	case protocol.EventDM:
		ev = new(protocol.DM)
	case protocol.EventAuth:
		ev = new(protocol.Authed)
	case protocol.EventTyping:
		ev = new(protocol.Typing)
	case protocol.EventNick:
		ev = new(protocol.NickChanged)
	case protocol.EventError:
		ev = new(protocol.Error)
	case protocol.EventRooms:
		ev = new(protocol.RoomList)
	case protocol.EventSearch:
		ev = new(protocol.SearchResult)
	default:
		return nil, nil
	}
	if err := json.Unmarshal(data, ev); err != nil {
		return nil, fmt.Errorf("client: decoding a %s event: %w", typ, err)
	}
	return ev, nil
}

// welcome makes cn the client's connection: it joins again every room
// the client is in, from where it left it, and returns cn's pace.
func (c *Client) welcome(cn *conn, w *protocol.Welcome) *rate.Limiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn, c.nick, c.user, cn.limits = cn, w.Nick, w.User, w.Limits
	if _, ok := c.rooms[w.Room]; !ok && !c.connectedOnce {
		c.rooms[w.Room] = &room{} // the server's join answers
	} else if !ok {
		cn.unwanted[w.Room] = true
		cn.send(protocol.Request{Type: protocol.TypeLeave, Room: w.Room})
	}
	if !c.connectedOnce {
		close(c.welcomed)
	}
	c.connectedOnce = true
	for name, r := range c.rooms {
		if r.epoch == 0 && name == w.Room {
			continue // joined by the server, for the first time
		}
		r.skipAuto = name == w.Room
		cn.send(c.joinRequest(name, r, ""))
	}
	c.scheduleRefresh(cn, w.Expires)
	return limiter(w.Limits)
}

// scheduleRefresh asks Config.Token for a fresh token before the one in
// force expires (Unix ms), and sends it.
func (c *Client) scheduleRefresh(cn *conn, expires int64) {
	if cn.refresh != nil {
		cn.refresh.Stop()
	}
	if c.cfg.Token == nil || expires == 0 {
		return
	}
	left := time.Until(time.UnixMilli(expires))
	before := min(c.cfg.RefreshBefore, left/3)
	cn.refresh = time.AfterFunc(left-before, func() {
		ctx, cancel := context.WithTimeout(c.ctx, max(before, time.Second))
		defer cancel()
		tok, err := c.cfg.Token(ctx)
		if err != nil {
			c.cfg.Logger.Warn("parley client: refreshing the token", "err", err)
			return // the server closes with 4001 at expiry: the reconnection asks again
		}
		c.mu.Lock()
		if c.conn == cn {
			cn.send(protocol.Request{Type: protocol.TypeAuth, Token: tok})
		}
		c.mu.Unlock()
	})
}

// handle updates the client's state for ev and says whether to deliver it.
func (c *Client) handle(cn *conn, ev Event) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	deliver := true
	switch e := ev.(type) {
	case *protocol.Message:
		deliver = c.entry(e.Room, e.Seq, e.ID)
	case *protocol.Edit:
		deliver = c.entry(e.Room, e.Seq, "")
	case *protocol.Reactions:
		if r := c.rooms[e.Room]; r != nil && e.Seq > r.last {
			r.last = e.Seq
		}
	case *protocol.Joined:
		deliver = c.joined(cn, e)
	case *protocol.History:
		deliver = c.history(cn, e)
	case *protocol.Left:
		if cn.unwanted[e.Room] {
			delete(cn.unwanted, e.Room)
			return false
		}
	case *protocol.Reset:
		if r := c.rooms[e.Room]; r != nil {
			r.epoch, r.last = e.Epoch, e.Seq
		}
	case *protocol.NickChanged:
		c.nick = e.Nick
	case *protocol.Authed:
		c.scheduleRefresh(cn, e.Expires)
	case *protocol.Error:
		return c.failed(e)
	}
	if deliver {
		c.answer(ev)
	}
	return deliver
}

// entry accounts for entry seq of room (with the say id id): false if it
// was delivered already.
func (c *Client) entry(name string, seq int64, id string) bool {
	r := c.rooms[name]
	if r == nil {
		return true
	}
	if seq <= r.last {
		return false
	}
	r.last = seq
	if id != "" {
		for i, s := range c.says {
			if s.room == name && s.id == id {
				c.says = append(c.says[:i], c.says[i+1:]...)
				s.done <- nil
				c.attempt = 0
				break
			}
		}
	}
	return true
}

// joined takes a join's answer.
func (c *Client) joined(cn *conn, j *protocol.Joined) bool {
	if cn.unwanted[j.Room] {
		return false
	}
	r := c.rooms[j.Room]
	if r == nil {
		return true // a join the client gave up (Leave): the leave follows
	}
	if r.skipAuto {
		r.skipAuto, r.skipHistory = false, true
		return false
	}
	if j.Epoch != r.epoch {
		r.epoch, r.last = j.Epoch, 0 // a log the client has not seen: all of its history is news
	}
	r.joining = true
	return true
}

// history takes a history: a join's is filtered of the entries delivered
// already, and ends the room's resumption (its pending messages are said
// again); one asked for (Send) is delivered as it is.
func (c *Client) history(cn *conn, h *protocol.History) bool {
	if cn.unwanted[h.Room] {
		return false
	}
	r := c.rooms[h.Room]
	if r == nil {
		return true
	}
	if r.skipHistory {
		r.skipHistory = false
		return false
	}
	if !r.joining {
		return true
	}
	r.joining = false
	kept := h.Messages[:0]
	for _, m := range h.Messages {
		var t entryRef
		if json.Unmarshal(m, &t) == nil && c.entry(h.Room, t.Seq, t.ID) {
			kept = append(kept, m)
		}
	}
	h.Messages = kept
	r.resumed = true
	c.resend(h.Room)
	return true
}

// resend says again the pending messages of room (all rooms: "") that
// the current connection has not sent.
func (c *Client) resend(name string) {
	if c.conn == nil {
		return
	}
	for _, s := range c.says {
		r := c.rooms[s.room]
		if s.sent || name != "" && s.room != name || r != nil && !r.resumed {
			continue
		}
		s.sent = true
		c.conn.send(protocol.Request{Type: protocol.TypeSay, ID: s.id, Room: s.room, Text: s.text})
	}
}

// failed takes an error event: one answering a pending message or
// request goes to it (not_delivered and rate_limited are said again
// after a backoff), others are delivered.
func (c *Client) failed(e *protocol.Error) bool {
	if e.Request == nil || e.Request.ID == "" {
		return true
	}
	for i, s := range c.says {
		if s.id != e.Request.ID || s.room != e.Request.Room {
			continue
		}
		if e.Code == protocol.CodeNotDelivered || e.Code == protocol.CodeRateLimited {
			s.sent = false
			c.retryLater(e.Code)
			return false
		}
		c.says = append(c.says[:i], c.says[i+1:]...)
		s.done <- &Error{Code: e.Code, Message: e.Message}
		return false
	}
	for i, w := range c.waiters {
		if w.id == e.Request.ID {
			c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
			w.done <- &Error{Code: e.Code, Message: e.Message}
			if e.Request.Type == protocol.TypeJoin {
				delete(c.rooms, e.Request.Room)
			}
			return false
		}
	}
	return true
}

// retryLater schedules a resend of the messages refused for code.
func (c *Client) retryLater(code protocol.Code) {
	if c.retry != nil {
		return // one is scheduled: it resends them all
	}
	d := c.cfg.MinBackoff << min(c.attempt, 16)
	d = min(d, c.cfg.MaxBackoff)
	if code == protocol.CodeRateLimited && c.conn != nil && c.conn.limits.RatePerSecond > 0 {
		d = max(d, time.Duration(float64(time.Second)/c.conn.limits.RatePerSecond))
	}
	c.attempt++
	d = d/2 + rand.N(d/2+1)
	c.retry = time.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.retry = nil
		if c.ctx.Err() == nil {
			c.resend("")
		}
	})
}

// answer ends the waiters ev answers.
func (c *Client) answer(ev Event) {
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.match(ev) {
			w.done <- nil
		} else {
			kept = append(kept, w)
		}
	}
	clear(c.waiters[len(kept):])
	c.waiters = kept
}

// disconnected forgets cn: messages it sent are said again on the next
// connection (the server drops a copy it has), rooms are resumed, and
// requests but joins fail.
func (c *Client) disconnected(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cn.refresh != nil {
		cn.refresh.Stop()
	}
	if c.conn != cn {
		return
	}
	c.conn = nil
	for _, s := range c.says {
		s.sent = false
	}
	for _, r := range c.rooms {
		r.resumed, r.joining, r.skipAuto, r.skipHistory = false, false, false, false
	}
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.join {
			kept = append(kept, w)
		} else {
			w.done <- errConnectionLost
		}
	}
	clear(c.waiters[len(kept):])
	c.waiters = kept
}
