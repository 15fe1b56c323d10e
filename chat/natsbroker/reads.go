package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/chat"
)

// Read positions (chat.ReadStore) live in a key-value bucket, one key per
// user and room, replicated and stored as the rooms' logs are: every node
// reads and moves the same positions, and they survive restarts with
// --data-dir. A position only moves forward: a move is a compare-and-set
// on the key's revision, tried again when another device moved it
// meanwhile.

// maxReadSize bounds a read position's record.
const maxReadSize = 128

// readTries bounds the compare-and-set attempts of one move.
const readTries = 8

func (b *Broker) openReads() error {
	var kv jetstream.KeyValue
	err := b.provision(context.Background(), func(ctx context.Context) (err error) {
		kv, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: b.cfg.Prefix + "_reads", Storage: b.storage(), History: 1, MaxValueSize: maxReadSize,
			MaxBytes: b.cfg.MaxReadBytes, TTL: ReadTTL, Replicas: b.replicas})
		return err
	})
	if err != nil {
		return fmt.Errorf("read-state bucket of MaxReadBytes %d: %w", b.cfg.MaxReadBytes, b.replicaErr(err))
	}
	b.reads = kv
	return nil
}

// readKey is user's key for room in the bucket.
func readKey(user, room string) string { return token(user) + "." + token(room) }

// ReadPosition implements chat.ReadStore.
func (b *Broker) ReadPosition(user, room string) (chat.ReadPos, error) {
	ctx, cancel := b.ctx()
	defer cancel()
	pos, _, err := b.readPos(ctx, readKey(user, room))
	return pos, err
}

// readPos reads a key's position and revision (0: none held).
func (b *Broker) readPos(ctx context.Context, key string) (chat.ReadPos, uint64, error) {
	e, err := b.reads.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return chat.ReadPos{}, 0, nil
	case err != nil:
		return chat.ReadPos{}, 0, fmt.Errorf("natsbroker: read position %q: %w", key, err)
	}
	var pos chat.ReadPos
	if err := strict(e.Value(), &pos); err != nil || pos.Seq < 0 || pos.Epoch < 0 {
		// Not one a node wrote: taken as none, and overwritten by the
		// next move.
		b.stats.droppedReads.Add(1)
		return chat.ReadPos{}, e.Revision(), nil
	}
	return pos, e.Revision(), nil
}

// MarkRead implements chat.ReadStore.
func (b *Broker) MarkRead(user, room string, pos chat.ReadPos) (chat.ReadPos, error) {
	ctx, cancel := b.ctx()
	defer cancel()
	key := readKey(user, room)
	data, err := json.Marshal(pos)
	if err != nil {
		return chat.ReadPos{}, err
	}
	for range readTries {
		held, rev, err := b.readPos(ctx, key)
		if err != nil {
			return chat.ReadPos{}, err
		}
		if !after(pos, held) {
			return held, nil
		}
		if rev == 0 {
			_, err = b.reads.Create(ctx, key, data)
		} else {
			_, err = b.reads.Update(ctx, key, data, rev)
		}
		if err == nil {
			return pos, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return chat.ReadPos{}, fmt.Errorf("natsbroker: move read position %q: %w", key, err)
		}
		// Another device moved it meanwhile: look again.
	}
	return chat.ReadPos{}, fmt.Errorf("natsbroker: move read position %q: changed by others %d times in a row", key, readTries)
}

// after reports whether p is further than q (chat.ReadPos's order).
func after(p, q chat.ReadPos) bool {
	return p.Epoch > q.Epoch || p.Epoch == q.Epoch && p.Seq > q.Seq
}

// isWrongSequence reports a compare-and-set that lost to another write.
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

var _ chat.ReadStore = (*Broker)(nil)

// ReadLog implements chat.LogReader: the entries of room's log numbered
// below before that its stream still holds, at most max of the newest,
// oldest first. The room must be open on this node.
func (b *Broker) ReadLog(room string, before int64, max int) ([]chat.StoredMessage, error) {
	b.mu.RLock()
	rs := b.rooms[room]
	b.mu.RUnlock()
	if rs == nil {
		return nil, fmt.Errorf("natsbroker: read the log of %q: not open here", room)
	}
	rs.mu.Lock()
	s := rs.stream
	rs.mu.Unlock()
	if s == nil || before <= 1 || max <= 0 {
		return nil, nil
	}
	ctx, cancel := b.ctx()
	info, err := s.Info(ctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("natsbroker: read the log of %q: %w", room, err)
	}
	last := min(uint64(before-1), info.State.LastSeq)
	if info.State.Msgs == 0 || last < info.State.FirstSeq {
		return nil, nil
	}
	first := info.State.FirstSeq
	if last-first+1 > uint64(max) {
		first = last - uint64(max) + 1
	}
	return b.fetchRange(context.Background(), s, first, last)
}

var _ chat.LogReader = (*Broker)(nil)
