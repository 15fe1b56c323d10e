package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/chat"
)

// maxRuleSize bounds a rule record in the bucket.
const maxRuleSize = 1 << 10

func (b *Broker) openRules() error {
	var kv jetstream.KeyValue
	err := b.provision(context.Background(), func(ctx context.Context) (err error) {
		kv, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: b.cfg.Prefix + "_rules", Storage: b.storage(), History: 1, MaxValueSize: maxRuleSize, Replicas: b.replicas})
		return err
	})
	if err != nil {
		return fmt.Errorf("rule bucket: %w", b.replicaErr(err))
	}
	b.rules = kv
	return nil
}

// ruleKey is r's key in the bucket: kind.room.subject, each a token.
func ruleKey(r chat.Rule) string {
	room := r.Room
	if room == "" {
		room = "_"
	}
	return r.Kind + "." + token(room) + "." + token(r.Subject)
}

// strict decodes data into v: unknown keys, duplicate keys and wrong types
// are errors.
func strict(data []byte, v any) error {
	return jsonv2.Unmarshal(data, v, jsonv2.RejectUnknownMembers(true))
}

// watchRules hands h the rules in force (deleting those past their time,
// so the bucket does not grow forever), then follows the bucket's changes
// on a goroutine of its own.
func (b *Broker) watchRules(h chat.BrokerHandler) error {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := b.rules.WatchAll(ctx)
	if err != nil {
		cancel()
		return fmt.Errorf("natsbroker: watch the rule bucket: %w", err)
	}
	timeout := time.After(b.cfg.RequestTimeout)
	now := time.Now().UnixMilli()
	var expired []string
initial:
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				break initial // the values in force are all in
			}
			if r, ok := b.ruleEntry(e); ok && e.Operation() == jetstream.KeyValuePut && r.Until <= now {
				expired = append(expired, e.Key())
				continue
			}
			b.applyRule(h, e)
		case <-timeout:
			cancel()
			return fmt.Errorf("natsbroker: the rule bucket's values did not come within %v", b.cfg.RequestTimeout)
		}
	}
	for _, k := range expired {
		ctx, c := b.ctx()
		_ = b.rules.Delete(ctx, k)
		c()
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer cancel()
		for {
			select {
			case <-b.stop:
				return
			case e := <-w.Updates():
				if e != nil {
					b.later(func() { b.applyRule(h, e) })
				}
			}
		}
	}()
	return nil
}

// ruleEntry decodes a bucket entry's rule, strictly; what does not decode
// is dropped and counted.
func (b *Broker) ruleEntry(e jetstream.KeyValueEntry) (chat.Rule, bool) {
	if e.Operation() != jetstream.KeyValuePut {
		b.mu.RLock()
		r, ok := b.known[e.Key()]
		b.mu.RUnlock()
		return r, ok
	}
	var r chat.Rule
	if err := strict(e.Value(), &r); err != nil || ruleKey(r) != e.Key() {
		b.stats.droppedRules.Add(1)
		if b.dropLog.allow() {
			b.log.Warn("dropping a rule record that does not decode or match its key", "key", e.Key(), "err", err)
		}
		return chat.Rule{}, false
	}
	return r, true
}

// applyRule hands a bucket change to h.
func (b *Broker) applyRule(h chat.BrokerHandler, e jetstream.KeyValueEntry) {
	r, ok := b.ruleEntry(e)
	if !ok {
		return
	}
	deleted := e.Operation() != jetstream.KeyValuePut
	b.mu.Lock()
	if deleted {
		delete(b.known, e.Key())
	} else {
		b.known[e.Key()] = r
	}
	b.mu.Unlock()
	h.HandleRule(r, deleted)
}

// PutRule implements chat.Broker: the rule goes in the bucket, and every
// node's watch delivers it.
func (b *Broker) PutRule(ctx context.Context, r chat.Rule) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	ctx, cancel := b.ctxFrom(ctx)
	defer cancel()
	if _, err := b.rules.Put(ctx, ruleKey(r), data); err != nil {
		return fmt.Errorf("natsbroker: put rule %s: %w", ruleKey(r), err)
	}
	return nil
}

// DeleteRule implements chat.Broker.
func (b *Broker) DeleteRule(ctx context.Context, r chat.Rule) error {
	ctx, cancel := b.ctxFrom(ctx)
	defer cancel()
	if err := b.rules.Delete(ctx, ruleKey(r)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("natsbroker: delete rule %s: %w", ruleKey(r), err)
	}
	return nil
}

// Broadcast implements chat.Broker.
func (b *Broker) Broadcast(data []byte) error {
	if err := b.nc.Publish(b.cfg.Prefix+".control", data); err != nil {
		return fmt.Errorf("natsbroker: broadcast: %w", err)
	}
	return nil
}

// Nodes implements chat.Broker: this node's load now, the others' as
// their last heartbeat told it.
func (b *Broker) Nodes() []chat.NodeInfo {
	b.mu.RLock()
	h := b.h
	out := make([]chat.NodeInfo, 0, 1+len(b.loads))
	for _, l := range b.loads {
		out = append(out, l)
	}
	b.mu.RUnlock()
	slices.SortFunc(out, func(x, y chat.NodeInfo) int {
		if x.Node < y.Node {
			return -1
		}
		return 1
	})
	self := chat.NodeInfo{Node: b.cfg.Node}
	if h != nil {
		self = h.NodeLoad()
		self.Node = b.cfg.Node
	}
	return append([]chat.NodeInfo{self}, out...)
}

// logLimit lets a log line through at most once a second.
type logLimit struct{ last atomic.Int64 }

func (l *logLimit) allow() bool {
	now, last := time.Now().UnixNano(), l.last.Load()
	return now-last >= int64(time.Second) && l.last.CompareAndSwap(last, now)
}
