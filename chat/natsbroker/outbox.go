package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/chat"
)

// The outbox: room messages on their way to their streams.
//
// Each message is published under a message id (Nats-Msg-Id) with a reply
// subject of this node's, where JetStream acknowledges it. A room has one
// group of messages in flight at a time: what was accepted while a group
// was in flight goes, all of it, back to back on one connection, once
// every message of that group is acknowledged (group commit: one round
// trip per group, however busy the room). A message accepted later never
// goes out before one accepted earlier is stored. (A free pipeline did:
// a message sent on a connection that was dropping was lost while the
// next, sent on the new connection before nats.go's disconnect callback
// had run, was stored first; TestLeaderDies caught it.) When a send fails
// (no acknowledgement within attemptTimeout, no stream to take it, an
// error, the connection lost) its room stalls, then its unacknowledged
// messages are sent again, in order, under the same ids, so JetStream
// stores each once whichever copy arrives; for carefulFor after a failure
// (a leader changing) they go one at a time. Within a group the order
// rests on the one connection and the one stream leader; a message stored
// after one of its group that failed is counted
// (parley_nats_overtaken_total).
//
// A message waits at most PublishTimeout; past it the sender is told it was
// not delivered, and so are those of the room queued behind it (storing
// them would put them before the one given up, should its sender say it
// again). The outbox holds at most MaxBuffered bytes.

// attemptTimeout bounds the wait for one send's acknowledgement.
const attemptTimeout = 2 * time.Second

// retryBackoff bounds the pause between resends of a stalled room.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
)

// sweepEvery is how often timeouts and resends are looked at.
const sweepEvery = 50 * time.Millisecond

// ErrBufferFull is why a message is refused when the outbox holds
// Config.MaxBuffered bytes.
var ErrBufferFull = errors.New("natsbroker: too many messages wait for NATS")

type outMsg struct {
	ro       *roomOut
	subject  string
	hdr      nats.Header
	data     []byte
	done     func(error)
	size     int
	accepted time.Time
	sentAt   time.Time
	token    uint64 // the reply token of its send in flight; 0: none
	lateTok  uint64 // the reply token of its last send that timed out; 0: none
	acked    bool
}

// roomOut is a room's queue: its messages accepted and not yet
// acknowledged in order.
type roomOut struct {
	room     string
	q        []*outMsg
	inflight int // of q, sent and not yet answered
	stalled  bool
	retryAt  time.Time
	backoff  time.Duration
	reopen   bool // a send found no stream: open it before the resend
	lastErr  error
	failedAt time.Time // the last failure: sends go one at a time for carefulFor after it
}

type outbox struct {
	b      *Broker
	prefix string // reply subjects: prefix + token

	mu     sync.Mutex
	rooms  map[string]*roomOut // rooms with messages queued
	flying map[uint64]*outMsg  // by reply token
	late   map[uint64]*outMsg  // sends that timed out, by reply token: their acknowledgement still counts
	next   uint64              // the last reply token given
	ids    uint64              // the last message id made here
	bytes  int
	tails  map[string]tailMark // rooms' last stored sequence numbers, announced in heartbeats (tails.go)
}

func newOutbox(b *Broker) *outbox {
	return &outbox{b: b, prefix: nats.NewInbox() + ".", rooms: make(map[string]*roomOut), flying: make(map[uint64]*outMsg),
		late: make(map[uint64]*outMsg), tails: make(map[string]tailMark)}
}

// listen subscribes to the acknowledgements.
func (o *outbox) listen() error {
	sub, err := o.b.nc.Subscribe(o.prefix+"*", o.answer)
	if err != nil {
		return fmt.Errorf("natsbroker: subscribe to publish acknowledgements: %w", err)
	}
	_ = sub.SetPendingLimits(-1, -1) // as many as are in flight: MaxBuffered bounds them
	return nil
}

// Publish implements chat.Broker: the message joins its room's queue in
// the outbox, and done runs once NATS has stored it (or it was given up).
func (b *Broker) Publish(room string, msg []byte, id string, done func(error)) {
	b.mu.RLock()
	rs, closed := b.rooms[room], b.closed
	b.mu.RUnlock()
	if closed {
		b.stats.publishErrors.Add(1)
		if done != nil {
			done(chat.ErrBrokerNotRunning)
		}
		return
	}
	subj := b.cfg.Prefix + ".in." + token(room)
	if rs != nil {
		subj = rs.subIn
	}
	b.out.add(room, subj, msg, id, done)
}

func (o *outbox) add(room, subj string, data []byte, id string, done func(error)) {
	b := o.b
	size := len(subj) + len(data) + len(id) + 64
	o.mu.Lock()
	if o.bytes+size > b.cfg.MaxBuffered {
		o.mu.Unlock()
		b.stats.publishErrors.Add(1)
		b.stats.bufferFull.Add(1)
		if done != nil {
			done(fmt.Errorf("publish to %q: %w (%d bytes)", room, ErrBufferFull, b.cfg.MaxBuffered))
		}
		return
	}
	if id == "" {
		o.ids++
		id = b.runID + "." + strconv.FormatUint(o.ids, 36)
	}
	ro := o.rooms[room]
	if ro == nil {
		ro = &roomOut{room: room}
		o.rooms[room] = ro
	}
	om := &outMsg{ro: ro, subject: subj, hdr: nats.Header{jetstream.MsgIDHeader: {id}}, data: data, done: done, size: size, accepted: time.Now()}
	ro.q = append(ro.q, om)
	o.bytes += size
	b.stats.published.Add(1)
	if !ro.stalled && ro.inflight == 0 {
		if err := o.send(om); err != nil {
			o.stall(ro, err)
		}
	}
	o.mu.Unlock()
}

// sendNext sends, once nothing of ro is in flight, every message of ro
// not yet acknowledged: the next group. Callers hold mu.
func (o *outbox) sendNext(ro *roomOut) {
	if ro.stalled || ro.inflight > 0 {
		return
	}
	careful := time.Since(ro.failedAt) < carefulFor
	for _, om := range ro.q {
		if om.acked {
			continue
		}
		if err := o.send(om); err != nil {
			o.stall(ro, err)
			return
		}
		if careful {
			return // one at a time
		}
	}
}

// carefulFor is how long after a failure a room sends one message at a
// time: while a stream's leader changes, the servers' interest in its
// subject comes and goes, and of two messages sent together the first
// may find none (503) where the second finds the new leader.
const carefulFor = 2 * time.Second

// send publishes om with a new reply token. Callers hold mu.
func (o *outbox) send(om *outMsg) error {
	o.next++
	tok := o.next
	m := &nats.Msg{Subject: om.subject, Reply: o.prefix + strconv.FormatUint(tok, 36), Header: om.hdr, Data: om.data}
	if err := o.b.nc.PublishMsg(m); err != nil {
		return err
	}
	om.token, om.sentAt = tok, time.Now()
	o.flying[tok] = om
	om.ro.inflight++
	return nil
}

// forget takes om's send out of flight: an answer to it is ignored.
// Callers hold mu.
func (o *outbox) forget(om *outMsg) {
	if om.token != 0 {
		delete(o.flying, om.token)
		om.token = 0
		om.ro.inflight--
	}
}

// expire takes om's send out of flight because it timed out, keeping its
// token: an acknowledgement that comes later still says the message is
// stored. (On a machine so busy that every acknowledgement took more than
// attemptTimeout, ignoring them held a room's messages until
// PublishTimeout.) Callers hold mu.
func (o *outbox) expire(om *outMsg) {
	tok := om.token
	o.forget(om)
	if tok != 0 {
		o.dropLate(om)
		om.lateTok = tok
		o.late[tok] = om
	}
}

// dropLate forgets om's timed-out send, if any. Callers hold mu.
func (o *outbox) dropLate(om *outMsg) {
	if om.lateTok != 0 {
		delete(o.late, om.lateTok)
		om.lateTok = 0
	}
}

// stall stops ro's sends until it is resent. Callers hold mu.
func (o *outbox) stall(ro *roomOut, err error) {
	ro.failedAt = time.Now()
	if !ro.stalled {
		ro.stalled = true
		ro.backoff = 0
		ro.retryAt = time.Now()
	}
	ro.lastErr = err
}

// pubAck is JetStream's answer to a publish.
type pubAck struct {
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	Error     *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// errNoStream: a publish found nobody to take it (no stream, or none with
// a leader).
var errNoStream = errors.New("no stream took the message")

// errTooLarge is JetStream's code for a message over the stream's or
// server's limit: sending it again cannot help.
const errTooLarge = 10054

// answer takes an acknowledgement. It runs on the subscription's
// goroutine.
func (o *outbox) answer(m *nats.Msg) {
	tok, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, o.prefix), 36, 64)
	if err != nil {
		return
	}
	var ackErr error
	permanent := false
	var a pubAck
	if m.Header.Get("Status") == "503" {
		ackErr = errNoStream
	} else {
		switch err := json.Unmarshal(m.Data, &a); {
		case err != nil:
			ackErr = fmt.Errorf("an acknowledgement that does not decode: %w", err)
		case a.Error != nil:
			ackErr = fmt.Errorf("JetStream: %s (%d)", a.Error.Description, a.Error.ErrCode)
			permanent = a.Error.ErrCode == errTooLarge
		case a.Seq == 0:
			ackErr = errors.New("an acknowledgement without a sequence number")
		}
	}
	o.mu.Lock()
	om := o.flying[tok]
	if om == nil {
		// Answered after it timed out: a success still counts (the
		// message is stored; its resend, if any, will be a duplicate).
		// Otherwise it was sent again: ignored.
		if om = o.late[tok]; om == nil || ackErr != nil || om.acked || o.rooms[om.ro.room] != om.ro {
			o.mu.Unlock()
			return
		}
		o.b.stats.lateAcks.Add(1)
	}
	o.dropLate(om)
	o.forget(om)
	ro := om.ro
	var calls []call
	switch {
	case ackErr == nil:
		om.acked = true
		o.stored(ro.room, a.Seq)
		for _, e := range ro.q {
			if e == om {
				break
			}
			if !e.acked && e.token == 0 {
				o.b.stats.overtook.Add(1) // stored before one accepted earlier, which failed
				break
			}
		}
		calls = o.pop(ro, nil)
		o.sendNext(ro)
	case permanent:
		o.dropLate(om)
		ro.q = slices.DeleteFunc(ro.q, func(e *outMsg) bool { return e == om })
		o.bytes -= om.size
		o.b.stats.publishErrors.Add(1)
		calls = append(o.pop(ro, nil), call{om.done, fmt.Errorf("publish to %q: %w", ro.room, ackErr)})
		o.sendNext(ro)
	default:
		if errors.Is(ackErr, errNoStream) {
			ro.reopen = true
		}
		o.stall(ro, ackErr)
	}
	o.mu.Unlock()
	run(calls)
}

// call is a done function and its argument, called once mu is released.
type call struct {
	done func(error)
	err  error
}

func run(calls []call) {
	for _, c := range calls {
		if c.done != nil {
			c.done(c.err)
		}
	}
}

// pop takes ro's acknowledged messages off the front of its queue, and
// drops ro once empty. Callers hold mu.
func (o *outbox) pop(ro *roomOut, calls []call) []call {
	n := 0
	for n < len(ro.q) && ro.q[n].acked {
		o.dropLate(ro.q[n])
		o.bytes -= ro.q[n].size
		calls = append(calls, call{ro.q[n].done, nil})
		ro.q[n] = nil
		n++
	}
	// Resliced, not shifted: an acknowledgement costs the same however
	// many messages of the room are in flight behind it.
	ro.q = ro.q[n:]
	if len(ro.q) == 0 && !ro.stalled {
		delete(o.rooms, ro.room)
	}
	return calls
}

// disconnected: what was in flight may or may not have reached NATS; it
// is sent again once back. Their answers would come to a subscription
// that may have missed them.
func (o *outbox) disconnected() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ro := range o.rooms {
		if ro.inflight == 0 {
			continue
		}
		for _, om := range ro.q {
			o.forget(om)
		}
		o.stall(ro, nats.ErrConnectionClosed)
	}
}

// reconnected resends the stalled rooms now.
func (o *outbox) reconnected() {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	for _, ro := range o.rooms {
		if ro.stalled {
			ro.retryAt, ro.backoff = now, 0
		}
	}
}

// sweep runs every sweepEvery until the broker stops: it times out sends
// unanswered for attemptTimeout, resends stalled rooms, and gives up what
// waited PublishTimeout.
func (o *outbox) sweep() {
	defer o.b.wg.Done()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-o.b.stop:
			o.closeAll()
			return
		case now := <-t.C:
			run(o.sweepOnce(now))
		}
	}
}

func (o *outbox) sweepOnce(now time.Time) []call {
	o.mu.Lock()
	defer o.mu.Unlock()
	var calls []call
	for _, ro := range o.rooms {
		if ro.inflight > 0 {
			for _, om := range ro.q {
				if om.token == 0 {
					continue
				}
				// The oldest send in flight (sends go in queue order).
				if now.Sub(om.sentAt) > attemptTimeout {
					o.b.stats.publishTimeouts.Add(1)
					for _, e := range ro.q { // and the rest: nothing overtakes it
						o.expire(e)
					}
					o.stall(ro, fmt.Errorf("no acknowledgement within %v", attemptTimeout))
				}
				break
			}
		}
		if !ro.stalled || ro.inflight > 0 || now.Before(ro.retryAt) {
			continue
		}
		if len(ro.q) > 0 && now.Sub(ro.q[0].accepted) > o.b.cfg.PublishTimeout {
			calls = o.giveUp(ro, calls)
			continue
		}
		if ro.reopen {
			ro.reopen = false
			ro.retryAt = now.Add(time.Hour) // until reopened
			o.b.wg.Add(1)
			go o.reopen(ro)
			continue
		}
		o.resend(ro, now)
	}
	return calls
}

// resend sends ro's first unacknowledged message again; the others
// follow it (sendNext), one at a time while the room is careful. Callers
// hold mu.
func (o *outbox) resend(ro *roomOut, now time.Time) {
	ro.stalled = false
	for _, om := range ro.q {
		if om.acked {
			continue
		}
		if err := o.send(om); err != nil {
			ro.stalled = true
			ro.lastErr = err
			ro.backoff = min(max(2*ro.backoff, minBackoff), maxBackoff)
			ro.retryAt = now.Add(ro.backoff)
			return
		}
		o.b.stats.retries.Add(1)
		break
	}
	if ro.backoff = 0; len(ro.q) == 0 {
		delete(o.rooms, ro.room)
	}
}

// giveUp tells the senders of ro's queue that their messages were not
// delivered. Callers hold mu.
func (o *outbox) giveUp(ro *roomOut, calls []call) []call {
	err := fmt.Errorf("publish to %q: NATS did not store it within %v: %w", ro.room, o.b.cfg.PublishTimeout, ro.lastErr)
	for _, om := range ro.q {
		o.forget(om)
		o.dropLate(om)
		o.bytes -= om.size
		if om.acked {
			calls = append(calls, call{om.done, nil})
			continue
		}
		o.b.stats.publishErrors.Add(1)
		calls = append(calls, call{om.done, err})
	}
	delete(o.rooms, ro.room)
	return calls
}

// reopen opens ro's stream again after a send found none (NATS lost it,
// or it was deleted), then lets the room be resent. On a goroutine of its
// own.
func (o *outbox) reopen(ro *roomOut) {
	b := o.b
	defer b.wg.Done()
	b.mu.RLock()
	rs := b.rooms[ro.room]
	b.mu.RUnlock()
	s, info, err := b.openStream(context.Background(), token(ro.room))
	if err != nil {
		b.log.Warn("opening a room's stream to publish to it", "room", ro.room, "err", err)
	} else {
		b.stats.recreated.Add(1)
		if rs != nil {
			b.later(func() { b.reopened(rs, s, info) }) // a new stream: its members are told of the reset
		}
	}
	o.mu.Lock()
	ro.backoff = min(max(2*ro.backoff, minBackoff), maxBackoff)
	ro.retryAt = time.Now()
	if err != nil {
		ro.retryAt = ro.retryAt.Add(ro.backoff)
	}
	o.mu.Unlock()
}

// closeAll tells the senders of everything left that it was not
// delivered: the broker is closing.
func (o *outbox) closeAll() {
	o.mu.Lock()
	var calls []call
	for _, ro := range o.rooms {
		for _, om := range ro.q {
			o.forget(om)
			o.dropLate(om)
			o.bytes -= om.size
			if om.acked {
				calls = append(calls, call{om.done, nil})
			} else {
				calls = append(calls, call{om.done, chat.ErrBrokerNotRunning})
			}
		}
		delete(o.rooms, ro.room)
	}
	o.mu.Unlock()
	run(calls)
}

// buffered reports the bytes and messages in the outbox.
func (o *outbox) buffered() (bytes, msgs int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ro := range o.rooms {
		msgs += len(ro.q)
	}
	return o.bytes, msgs
}
