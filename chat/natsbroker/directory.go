package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/chat"
)

func (b *Broker) openNicks() error {
	var kv jetstream.KeyValue
	err := b.provision(context.Background(), func(ctx context.Context) (err error) {
		kv, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: b.cfg.Prefix + "_nicks", Storage: jetstream.MemoryStorage, History: 1, Replicas: b.replicas})
		return err
	})
	if err != nil {
		return fmt.Errorf("nick bucket: %w", b.replicaErr(err))
	}
	b.mu.Lock()
	b.nicks = kv
	b.mu.Unlock()
	return nil
}

// ownerAlive reports whether an owner record's node ("node/...") is alive.
func (b *Broker) ownerAlive(owner string) bool {
	node, _, _ := strings.Cut(owner, "/")
	return b.alive(node)
}

func (b *Broker) kv() jetstream.KeyValue {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.nicks
}

// ClaimNick implements chat.Broker: a create in the nick bucket, or a
// take-over of a record whose node is gone. Both are compare-and-set: a
// record that changed between the read and the write (released, or taken
// over from a node gone) is read again, a few times, before the nick is
// called taken.
func (b *Broker) ClaimNick(ctx context.Context, key, owner string) error {
	ctx, cancel := b.ctxFrom(ctx)
	defer cancel()
	kv, k := b.kv(), token(key)
	err := errNickChanged
	for try := 0; try < claimTries && errors.Is(err, errNickChanged); try++ {
		err = b.claimOnce(ctx, kv, k, owner)
	}
	switch {
	case errors.Is(err, errNickChanged):
		return chat.ErrNickClaimed // it kept changing: others want it too
	case errors.Is(err, chat.ErrNickClaimed):
		return err
	case err != nil:
		return fmt.Errorf("natsbroker: claim nick %q: %w", key, err)
	}
	b.mu.Lock()
	b.claims[key] = owner
	b.mu.Unlock()
	return nil
}

// claimTries bounds the reads of a nick record that keeps changing.
const claimTries = 3

// errNickChanged: the nick record changed between a read and a write.
var errNickChanged = errors.New("nick record changed meanwhile")

// claimOnce makes one attempt of ClaimNick.
func (b *Broker) claimOnce(ctx context.Context, kv jetstream.KeyValue, k, owner string) error {
	_, err := kv.Create(ctx, k, []byte(owner))
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	e, err := kv.Get(ctx, k)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return errNickChanged // released since the create
	case err != nil:
		return err
	}
	switch held := string(e.Value()); {
	case held == owner:
		return nil
	case b.ownerAlive(held):
		return chat.ErrNickClaimed
	}
	if _, err = kv.Update(ctx, k, []byte(owner), e.Revision()); errors.Is(err, jetstream.ErrKeyExists) {
		return errNickChanged
	}
	return err
}

// ReleaseNick implements chat.Broker.
func (b *Broker) ReleaseNick(ctx context.Context, key, owner string) error {
	b.mu.Lock()
	if b.claims[key] == owner {
		delete(b.claims, key)
	}
	b.mu.Unlock()
	ctx, cancel := b.ctxFrom(ctx)
	defer cancel()
	kv, k := b.kv(), token(key)
	e, err := kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err == nil && string(e.Value()) == owner {
		err = kv.Delete(ctx, k, jetstream.LastRevision(e.Revision()))
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("natsbroker: release nick %q: %w", key, err)
	}
	return nil
}

// LookupNick implements chat.Broker. A record whose node is gone is no
// one's.
func (b *Broker) LookupNick(ctx context.Context, key string) (string, error) {
	ctx, cancel := b.ctxFrom(ctx)
	defer cancel()
	e, err := b.kv().Get(ctx, token(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", chat.ErrNickNotFound
	}
	if err != nil {
		return "", fmt.Errorf("natsbroker: look nick %q up: %w", key, err)
	}
	if o := string(e.Value()); b.ownerAlive(o) {
		return o, nil
	}
	return "", chat.ErrNickNotFound
}
