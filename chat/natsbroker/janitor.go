package natsbroker

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Which node has which room open is kept in the key-value bucket
// <prefix>_rooms, one key per room and node (<token>.<node>): put before
// the node opens the room's stream, deleted when it lets the room go. The
// janitor, run by the live node with the smallest name, deletes the stream
// of a room no live node has had open for RoomTTL, so streams and the
// memory (or disk) they hold follow the rooms.

// openRooms makes (or finds) the room directory bucket.
func (b *Broker) openRooms() error {
	var kv jetstream.KeyValue
	err := b.provision(context.Background(), func(ctx context.Context) (err error) {
		kv, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: b.cfg.Prefix + "_rooms", Storage: jetstream.MemoryStorage, History: 1, Replicas: b.replicas})
		return err
	})
	if err != nil {
		return b.replicaErr(err)
	}
	b.mu.Lock()
	b.roomDir = kv
	b.mu.Unlock()
	return nil
}

func (b *Broker) roomsKV() jetstream.KeyValue {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.roomDir
}

// roomKey is the directory key saying this node has tok open.
func (b *Broker) roomKey(tok string) string { return tok + "." + b.cfg.Node }

// holdRoom records that this node has tok open. A failure is logged: the
// janitor may then delete the stream under the node, which makes it again.
func (b *Broker) holdRoom(tok string) {
	ctx, cancel := b.ctx()
	defer cancel()
	if _, err := b.roomsKV().Put(ctx, b.roomKey(tok), nil); err != nil {
		b.log.Warn("recording a room this node has open", "token", tok, "err", err)
	}
}

// releaseRoom records that this node let tok go.
func (b *Broker) releaseRoom(tok string) {
	ctx, cancel := b.ctx()
	defer cancel()
	if err := b.roomsKV().Delete(ctx, b.roomKey(tok)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		b.log.Warn("recording a room this node let go", "token", tok, "err", err)
	}
}

// forgetOwnRooms deletes the directory keys a former run of this node
// (same name) left: it has no room open yet.
func (b *Broker) forgetOwnRooms() error {
	ctx, cancel := b.ctx()
	defer cancel()
	kv := b.roomsKV()
	l, err := kv.ListKeysFiltered(ctx, "*."+b.cfg.Node)
	if err != nil {
		return err
	}
	for k := range l.Keys() {
		if err := kv.Delete(ctx, k); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
	}
	return nil
}

// janitor deletes, while this node leads, the streams of rooms no live
// node has open, once they have been so for RoomTTL.
func (b *Broker) janitor() {
	defer b.wg.Done()
	every := min(b.cfg.RoomTTL/4, 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	abandoned := make(map[string]time.Time) // stream name -> first seen with no node
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			if !b.leads() || !b.nc.IsConnected() {
				abandoned = make(map[string]time.Time) // another node counts; if this one leads again, it starts over
				continue
			}
			if err := b.sweepStreams(now, abandoned); err != nil {
				b.log.Warn("looking for abandoned rooms' streams", "err", err)
			}
			if len(abandoned) == 0 {
				abandoned = make(map[string]time.Time) // a map keeps its buckets after deletes
			}
		}
	}
}

// leads reports whether this node has the smallest name among the live
// nodes.
func (b *Broker) leads() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for n := range b.seen {
		if n < b.cfg.Node {
			return false
		}
	}
	return true
}

// sweepStreams runs one janitor pass.
func (b *Broker) sweepStreams(now time.Time, abandoned map[string]time.Time) error {
	ctx, cancel := b.ctx()
	defer cancel()
	open := make(map[string]bool) // tokens some live node has open
	keys, err := b.roomsKV().ListKeys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return err
	}
	if keys != nil {
		for k := range keys.Keys() {
			if i := strings.LastIndexByte(k, '.'); i > 0 && b.alive(k[i+1:]) {
				open[k[:i]] = true
			}
		}
	}
	prefix := b.cfg.Prefix + "_room_"
	names := b.js.StreamNames(ctx, jetstream.WithStreamListSubject(b.cfg.Prefix+".in.>"))
	seen := make(map[string]bool)
	for name := range names.Name() {
		tok, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		seen[name] = true
		if open[tok] {
			delete(abandoned, name)
			continue
		}
		since, known := abandoned[name]
		if !known {
			abandoned[name] = now
			continue
		}
		if now.Sub(since) < b.cfg.RoomTTL {
			continue
		}
		if err := b.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			b.log.Warn("deleting an abandoned room's stream", "stream", name, "err", err)
			continue
		}
		delete(abandoned, name)
		b.stats.streamsDeleted.Add(1)
	}
	if err := names.Err(); err != nil {
		return err
	}
	for name := range abandoned {
		if !seen[name] {
			delete(abandoned, name) // deleted by someone else
		}
	}

	// A deleted key leaves a marker behind: without this, every room
	// ever opened would cost the bucket a message.
	return b.roomsKV().PurgeDeletes(ctx, jetstream.DeleteMarkersOlderThan(-1))
}
