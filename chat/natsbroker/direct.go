package natsbroker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parleyhq/parley/chat"
)

// A direct message is a NATS request to <prefix>.node.<node>.direct; the
// node answers on the sender's answer subject (<inbox>.<id>) with one of
// these words.
const (
	answerOK      = "ok"
	answerNoNick  = "unknown_nick"
	answerRefused = "refused" // it did not decode, or the node could not take it
)

// maxDirects bounds the direct messages awaiting their answer; past it
// SendDirect fails at once.
const maxDirects = 4096

// directs are the direct messages awaiting their answer, by id. A timer per
// message, no goroutine: a node that never answers costs a map entry for
// RequestTimeout.
type directs struct {
	mu      sync.Mutex
	prefix  string // <inbox>. : answers come to prefix+id
	next    uint64
	waiting map[uint64]func(error)
}

// listenAnswers subscribes to this node's answer subjects.
func (b *Broker) listenAnswers() error {
	b.dms.prefix = nats.NewInbox() + "."
	b.dms.waiting = make(map[uint64]func(error))
	if _, err := b.nc.Subscribe(b.dms.prefix+"*", b.answered); err != nil {
		return fmt.Errorf("natsbroker: subscribe to direct-message answers: %w", err)
	}
	return nil
}

// take removes and returns the done function waiting under id.
func (d *directs) take(id uint64) func(error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	done := d.waiting[id]
	delete(d.waiting, id)
	return done
}

// SendDirect implements chat.Broker: a request to node, answered by its
// hub. It fails at once for a node not seen alive.
func (b *Broker) SendDirect(node string, data []byte, done func(error)) {
	if !b.alive(node) {
		done(fmt.Errorf("%w: %q", chat.ErrNoNode, node))
		return
	}
	d := &b.dms
	d.mu.Lock()
	if d.waiting == nil || len(d.waiting) >= maxDirects {
		d.mu.Unlock()
		done(fmt.Errorf("natsbroker: direct message to %q: %d await their answer already", node, maxDirects))
		return
	}
	d.next++
	id := d.next
	d.waiting[id] = done
	d.mu.Unlock()
	m := &nats.Msg{Subject: b.cfg.Prefix + ".node." + node + ".direct", Reply: d.prefix + strconv.FormatUint(id, 10), Data: data}
	if err := b.nc.PublishMsg(m); err != nil {
		if done := d.take(id); done != nil {
			done(fmt.Errorf("natsbroker: direct message to %q: %w", node, err))
		}
		return
	}
	time.AfterFunc(b.cfg.RequestTimeout, func() {
		if done := d.take(id); done != nil {
			done(fmt.Errorf("natsbroker: direct message to %q: no answer within %v", node, b.cfg.RequestTimeout))
		}
	})
}

// answered hands a direct message's answer to its sender.
func (b *Broker) answered(m *nats.Msg) {
	id, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, b.dms.prefix), 10, 64)
	if err != nil {
		return
	}
	done := b.dms.take(id)
	if done == nil {
		return // timed out already
	}
	switch string(m.Data) {
	case "":
		if m.Header.Get("Status") == "503" { // NATS: nobody subscribes there
			done(fmt.Errorf("%w: nobody listens for the node's direct messages", chat.ErrNoNode))
			return
		}
		done(errors.New("natsbroker: an empty answer to a direct message"))
	case answerOK:
		done(nil)
	case answerNoNick:
		done(fmt.Errorf("%w: not on that node", chat.ErrNickNotFound))
	default:
		done(fmt.Errorf("natsbroker: direct message refused by its node (%.40q)", m.Data))
	}
}

// answerDirect answers a direct message with what its handler said.
func (b *Broker) answerDirect(m *nats.Msg, err error) {
	if m.Reply == "" {
		return
	}
	a := answerOK
	switch {
	case errors.Is(err, chat.ErrNickNotFound):
		a = answerNoNick
	case err != nil:
		a = answerRefused
	}
	_ = m.Respond([]byte(a)) // fails only while disconnected: the sender times out
}
