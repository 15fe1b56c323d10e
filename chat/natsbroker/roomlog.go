package natsbroker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/chat"
)

// roomSub is a room this node subscribes to. last and ready are used by
// the dispatcher goroutine and Subscribe, under mu.
type roomSub struct {
	name, token string
	stream      jetstream.Stream
	subIn       string // where messages are published
	msgs, pres  *nats.Subscription

	mu      sync.Mutex
	ready   bool   // Subscribe has loaded the state: deliveries may start
	epoch   int64  // the stream's creation, Unix ms
	last    uint64 // the last sequence number handed to the hub
	pending uint64 // the highest number seen before ready

	// The dispatcher's alone. While missed messages are fetched (on a
	// goroutine of their own: the dispatcher never waits on NATS), live
	// ones wait in held, in order.
	repairing bool
	want      uint64      // the highest number known to exist: repairs go up to it
	held      []*nats.Msg // at most maxHeld; past it they are fetched too
	checking  bool        // a heartbeat named a message not seen here: its stream's end is being asked (tails.go)
}

// maxHeld bounds the live messages a room holds while it repairs.
const maxHeld = 4096

// maxToken bounds a token's length: stream names (prefix and token) stay
// far below the limits of NATS and of the file systems JetStream stores
// them in.
const maxToken = 64

// token is a room name, nick or user id as a subject token, stream-name
// part and key: itself when it is plain ASCII (letters, digits, '_', '-',
// not starting with '_') of at most maxToken bytes; else '_' and its hex
// when that fits; else "__" and the hex of 24 bytes of its SHA-256. The
// three never meet: hex never starts with '_'. Every valid room name
// works, whatever its bytes (32 letters of 4 bytes each are 128).
func token(s string) string {
	plain := s != "" && s[0] != '_' && len(s) <= maxToken
	for i := 0; plain && i < len(s); i++ {
		c := s[i]
		plain = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	switch {
	case plain:
		return s
	case 1+2*len(s) <= maxToken:
		return "_" + hex.EncodeToString([]byte(s))
	default:
		sum := sha256.Sum256([]byte(s))
		return "__" + hex.EncodeToString(sum[:24])
	}
}

// storage is where room logs and rules live.
func (b *Broker) storage() jetstream.StorageType {
	if b.cfg.FileStorage {
		return jetstream.FileStorage
	}
	return jetstream.MemoryStorage
}

// streamConfig is room's stream: its log and its order.
func (b *Broker) streamConfig(tok string) jetstream.StreamConfig {
	in := b.cfg.Prefix + ".in." + tok
	return jetstream.StreamConfig{
		Name:        b.cfg.Prefix + "_room_" + tok,
		Subjects:    []string{in},
		Storage:     b.storage(),
		MaxMsgs:     int64(b.cfg.LogSize),
		MaxBytes:    int64(b.cfg.LogBytes),
		MaxAge:      b.cfg.HistoryMaxAge,
		Discard:     jetstream.DiscardOld,
		Replicas:    b.replicas,
		Duplicates:  dedupWindow,
		AllowDirect: true,
		RePublish:   &jetstream.RePublish{Source: in, Destination: b.cfg.Prefix + ".room." + tok},
	}
}

// openStream finds room's stream, or makes it.
func (b *Broker) openStream(parent context.Context, tok string) (s jetstream.Stream, info *jetstream.StreamInfo, err error) {
	err = b.provision(parent, func(ctx context.Context) error {
		s, info, err = b.openStreamOnce(ctx, tok)
		return err
	})
	return s, info, err
}

func (b *Broker) openStreamOnce(ctx context.Context, tok string) (jetstream.Stream, *jetstream.StreamInfo, error) {
	cfg := b.streamConfig(tok)
	s, err := b.js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = b.js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = b.js.Stream(ctx, cfg.Name) // made meanwhile by a node with other settings
		}
		err = storeErr(err)
	}
	// A stream made by a node with other settings is used as it is, but
	// for its replicas, which follow this node's.
	if err == nil && s.CachedInfo().Config.Replicas != cfg.Replicas {
		up := s.CachedInfo().Config
		b.log.Info("changing a room stream's replicas", "stream", cfg.Name, "from", up.Replicas, "to", cfg.Replicas)
		up.Replicas = cfg.Replicas
		s, err = b.js.UpdateStream(ctx, up)
		err = b.replicaErr(err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("natsbroker: stream %q: %w", cfg.Name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("natsbroker: stream %q info: %w", cfg.Name, err)
	}
	return s, info, nil
}

// Subscribe implements chat.Broker: the room's stream is made if needed,
// its stored messages loaded, and its republished messages and presence
// subscribed to.
func (b *Broker) Subscribe(ctx context.Context, room string) (chat.RoomState, error) {
	b.mu.RLock()
	rs := b.rooms[room]
	b.mu.RUnlock()
	if rs != nil {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		return chat.RoomState{Epoch: rs.epoch, Seq: int64(rs.last)}, nil
	}
	tok := token(room)
	rs = &roomSub{name: room, token: tok, subIn: b.cfg.Prefix + ".in." + tok}
	if err := b.subscribe(b.cfg.Prefix+".room."+tok, route{kind: routeRoom, room: rs}); err != nil {
		return chat.RoomState{}, err
	}
	if err := b.subscribe(b.cfg.Prefix+".presence."+tok, route{kind: routePresence, room: rs}); err != nil {
		b.unsubscribe(rs)
		return chat.RoomState{}, err
	}
	b.mu.Lock()
	b.rooms[room] = rs
	b.mu.Unlock()
	b.holdRoom(tok) // before the stream: the janitor never deletes it under an open room
	s, info, err := b.openStream(ctx, tok)
	if err != nil {
		b.unsubscribe(rs)
		return chat.RoomState{}, err
	}
	st, err := b.load(ctx, s, info)
	if err != nil {
		b.unsubscribe(rs)
		return chat.RoomState{}, err
	}
	rs.mu.Lock()
	rs.stream, rs.epoch, rs.last, rs.ready = s, st.Epoch, uint64(st.Seq), true
	catchUp := rs.pending > rs.last
	rs.mu.Unlock()
	if catchUp {
		b.later(func() { // republished while loading
			rs.mu.Lock()
			upTo := rs.pending
			rs.mu.Unlock()
			b.catchUp(rs, upTo)
		})
	}
	return st, nil
}

// load reads a stream's state and stored messages.
func (b *Broker) load(ctx context.Context, s jetstream.Stream, info *jetstream.StreamInfo) (chat.RoomState, error) {
	st := chat.RoomState{Epoch: info.Created.UnixMilli(), Seq: int64(info.State.LastSeq)}
	if info.State.Msgs == 0 {
		return st, nil
	}
	// The history: the last HistorySize of the log.
	first := max(info.State.FirstSeq, info.State.LastSeq-min(info.State.LastSeq, uint64(b.cfg.HistorySize))+1)
	var err error
	st.Messages, err = b.fetchRange(ctx, s, first, info.State.LastSeq)
	return st, err
}

// fetchRange reads the stored messages numbered first to last (those the
// stream still has) with one ordered consumer: two round trips, not one
// per message.
func (b *Broker) fetchRange(parent context.Context, s jetstream.Stream, first, last uint64) ([]chat.StoredMessage, error) {
	ctx, cancel := b.ctxFrom(parent)
	defer cancel()
	name := s.CachedInfo().Config.Name
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: first})
	if err != nil {
		return nil, fmt.Errorf("natsbroker: reading %q: %w", name, err)
	}
	batch, err := c.Fetch(int(last-first+1), jetstream.FetchMaxWait(b.cfg.RequestTimeout))
	if err != nil {
		return nil, fmt.Errorf("natsbroker: reading %q: %w", name, err)
	}
	var out []chat.StoredMessage
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil || md.Sequence.Stream > last {
			continue
		}
		out = append(out, chat.StoredMessage{Seq: int64(md.Sequence.Stream), Data: m.Data(), Time: md.Timestamp.UnixNano()})
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return out, fmt.Errorf("natsbroker: reading %q: %w", name, err)
	}
	return out, nil
}

// Unsubscribe implements chat.Broker. The room's stream stays: other nodes
// and later joiners use it.
func (b *Broker) Unsubscribe(room string) error {
	b.mu.RLock()
	rs := b.rooms[room]
	b.mu.RUnlock()
	if rs != nil {
		b.unsubscribe(rs)
		b.releaseRoom(rs.token)
	}
	return nil
}

func (b *Broker) unsubscribe(rs *roomSub) {
	b.mu.Lock()
	if b.rooms[rs.name] == rs {
		delete(b.rooms, rs.name)
	}
	delete(b.routes, b.cfg.Prefix+".room."+rs.token)
	delete(b.routes, b.cfg.Prefix+".presence."+rs.token)
	b.mu.Unlock()
	for _, s := range []*nats.Subscription{rs.msgs, rs.pres} {
		if s != nil {
			_ = s.Unsubscribe()
		}
	}
}

// streamGone re-creates a subscribed room's stream deleted under this
// node (JetStream's advisory names it), so that its members are told of
// the reset and later messages are stored.
func (b *Broker) streamGone(stream string) {
	tok, ok := strings.CutPrefix(stream, b.cfg.Prefix+"_room_")
	if !ok {
		return
	}
	b.mu.RLock()
	var rs *roomSub
	for _, r := range b.rooms {
		if r.token == tok {
			rs = r
		}
	}
	b.mu.RUnlock()
	if rs == nil {
		return
	}
	b.stats.recreated.Add(1)
	b.log.Warn("a room's stream was deleted: making it again", "room", rs.name)
	b.resyncRoom(rs)
}

// roomMessage delivers a republished room message; one that follows a
// gap waits while the missing ones are fetched. Dispatcher only.
func (b *Broker) roomMessage(h chat.BrokerHandler, rs *roomSub, m *nats.Msg) {
	seq, err := strconv.ParseUint(m.Header.Get(hdrSequence), 10, 64)
	if err != nil {
		b.log.Warn("a room message without a sequence number", "room", rs.name, "subject", m.Subject)
		return
	}
	if ts, err := time.Parse(time.RFC3339Nano, m.Header.Get(hdrTimestamp)); err == nil {
		b.stats.lag.observe(time.Since(ts))
	}
	if b.testDrop != nil && b.testDrop(rs.name, seq) {
		return
	}
	if rs.repairing {
		if len(rs.held) < maxHeld {
			rs.held = append(rs.held, m)
		} else {
			rs.want = max(rs.want, seq) // fetched with the others
		}
		return
	}
	rs.mu.Lock()
	if !rs.ready {
		rs.pending = max(rs.pending, seq)
		rs.mu.Unlock()
		return
	}
	from := rs.last + 1
	switch {
	case seq < from:
		rs.mu.Unlock()
		b.stats.duplicates.Add(1)
		return
	case seq > from:
		rs.mu.Unlock()
		rs.held = append(rs.held, m)
		b.catchUp(rs, seq-1)
		return
	}
	rs.last = seq
	rs.mu.Unlock()
	b.stats.received.Add(1)
	h.HandleMessage(rs.name, int64(seq), m.Data)
}

// catchUp fetches rs's messages after the last delivered up to upTo, on
// a goroutine of its own, and delivers them on the dispatcher (repaired),
// before the live ones held meanwhile. Dispatcher only.
func (b *Broker) catchUp(rs *roomSub, upTo uint64) {
	rs.want = max(rs.want, upTo)
	if rs.repairing {
		return // the repair under way goes on up to want
	}
	rs.mu.Lock()
	from, s, epoch := rs.last+1, rs.stream, rs.epoch
	rs.mu.Unlock()
	if s == nil || rs.want < from {
		b.releaseHeld(rs)
		return
	}
	rs.repairing = true
	to := rs.want
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if b.testFetch != nil {
			b.testFetch(rs.name)
		}
		// NATS away, or the stream without a leader for a while: the
		// messages are there, try again. Only those the stream no longer
		// has are lost.
		backoff, began := minBackoff, time.Now()
		for {
			msgs, err := b.fetchMissed(s, epoch, from, to)
			// Past PublishTimeout what could be read is all there will be:
			// a stream that still says it ends before a message this node
			// was sent lost it (memory storage, every copy restarted).
			if err == nil || errors.Is(err, errShortRead) && time.Since(began) > b.cfg.PublishTimeout {
				b.later(func() { b.repaired(rs, epoch, from, to, msgs) })
				return
			}
			b.stats.fetchRetries.Add(1)
			if b.dropLog.allow() {
				b.log.Warn("fetching a room's missed messages; trying again", "room", rs.name, "from", from, "to", to, "err", err)
			}
			select {
			case <-b.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			rs.mu.Lock()
			s = rs.stream // reopened meanwhile
			reset := rs.epoch != epoch
			rs.mu.Unlock()
			if reset { // the log was lost: reopened told the members
				b.later(func() { b.repaired(rs, epoch, from, to, nil) })
				return
			}
		}
	}()
}

// errShortRead: a fetch ended before the last message asked for.
var errShortRead = errors.New("the stream sent fewer messages than it holds")

// fetchMissed reads the messages numbered from to to that the stream of
// epoch still has; an error means they may be there but could not be
// read (NATS away, no leader), never that they are gone.
func (b *Broker) fetchMissed(s jetstream.Stream, epoch int64, from, to uint64) ([]chat.StoredMessage, error) {
	ctx, cancel := b.ctx()
	info, err := s.Info(ctx)
	cancel()
	switch {
	case err != nil:
		return nil, err
	case info.Created.UnixMilli() != epoch:
		return nil, nil // another log: repaired drops what it is given
	}
	first, last := max(from, info.State.FirstSeq), min(to, info.State.LastSeq)
	var msgs []chat.StoredMessage
	if first <= last { // else trimmed
		msgs, err = b.fetchRange(context.Background(), s, first, last)
	}
	switch {
	case err != nil:
	case first <= last && (len(msgs) == 0 || msgs[len(msgs)-1].Seq != int64(last)):
		err = fmt.Errorf("%w: %d to %d asked, %d read", errShortRead, first, last, len(msgs))
	case info.State.LastSeq < to:
		// The stream ends before a message that was republished: this
		// answer comes from a copy still catching up (a leader change).
		err = fmt.Errorf("%w: it ends at %d, %d was sent", errShortRead, info.State.LastSeq, to)
	}
	return msgs, err
}

// repaired delivers the messages a repair fetched (those it could not
// are lost: beyond the stream's history, or NATS is away), then the live
// ones held meanwhile. Dispatcher only.
func (b *Broker) repaired(rs *roomSub, epoch int64, from, to uint64, msgs []chat.StoredMessage) {
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	rs.mu.Lock()
	current := rs.epoch == epoch // else the log was reset meanwhile: what was fetched is of the old one
	rs.mu.Unlock()
	for seq, i := from, 0; current && seq <= to; seq++ {
		for i < len(msgs) && msgs[i].Seq < int64(seq) {
			i++
		}
		rs.mu.Lock()
		deliver := seq > rs.last
		if deliver {
			rs.last = seq
		}
		rs.mu.Unlock()
		switch {
		case !deliver:
		case i < len(msgs) && msgs[i].Seq == int64(seq):
			b.stats.repaired.Add(1)
			b.stats.received.Add(1)
			h.HandleMessage(rs.name, int64(seq), msgs[i].Data)
		default:
			b.stats.lost.Add(1)
		}
	}
	rs.repairing = false
	rs.mu.Lock()
	last := rs.last
	rs.mu.Unlock()
	if rs.want > last {
		b.catchUp(rs, rs.want) // more went missing meanwhile
		return
	}
	b.releaseHeld(rs)
}

// releaseHeld delivers the live messages held during a repair, in order;
// one of them may start another. Dispatcher only.
func (b *Broker) releaseHeld(rs *roomSub) {
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	held := rs.held
	rs.held = nil
	for i, m := range held {
		b.roomMessage(h, rs, m)
		if rs.repairing { // a new gap: the rest waits behind it
			rs.held = append(rs.held, held[i+1:]...)
			return
		}
	}
}

// pause stops deliveries to every room until resync has checked its log:
// NATS may come back without it.
func (b *Broker) pause() {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, rs := range b.rooms {
		rs.mu.Lock()
		rs.ready = false
		rs.mu.Unlock()
	}
}

// resync runs after a reconnect: rooms whose stream was lost start anew
// (the members are told), the others fetch what was missed; nick claims
// are made again.
func (b *Broker) resync() {
	b.mu.Lock()
	rooms := make([]*roomSub, 0, len(b.rooms))
	for _, rs := range b.rooms {
		rooms = append(rooms, rs)
	}
	now := time.Now()
	for n := range b.seen {
		b.seen[n] = now // heard from again: the outage was ours
	}
	b.mu.Unlock()
	go func() {
		if err := b.openRooms(); err != nil {
			b.log.Warn("reopening the room directory", "err", err)
		} else {
			for _, rs := range rooms {
				b.holdRoom(rs.token)
			}
		}
		for err := b.openNicks(); err != nil; err = b.openNicks() {
			b.log.Warn("reopening the nick bucket; trying again in a second", "err", err)
			select {
			case <-b.stop:
				return
			case <-time.After(time.Second):
			}
		}
		b.mu.RLock()
		claims := make(map[string]string, len(b.claims))
		for k, o := range b.claims {
			claims[k] = o
		}
		b.mu.RUnlock()
		for k, o := range claims {
			if err := b.ClaimNick(context.Background(), k, o); err != nil {
				b.log.Warn("claiming a nick again after a reconnect", "nick", k, "err", err)
			}
		}
	}()
	for _, rs := range rooms {
		b.resyncRoom(rs)
	}
}

// spawn runs f on a goroutine Close waits for, unless the broker is
// closed (then it reports false and f never runs).
func (b *Broker) spawn(f func()) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed { // Close waits for the group: no Add after it
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
	return true
}

// resyncRoom opens rs's stream again (at most maxOpens at a time, on
// goroutines of their own) and hands the result to the dispatcher
// (reopened). A room whose stream was lost starts anew; the others fetch
// what they missed.
func (b *Broker) resyncRoom(rs *roomSub) {
	b.spawn(func() {
		select {
		case b.opens <- struct{}{}:
		case <-b.stop:
			return
		}
		defer func() { <-b.opens }()
		b.mu.RLock()
		current, closed := b.rooms[rs.name] == rs, b.closed
		b.mu.RUnlock()
		if !current || closed {
			return // unsubscribed meanwhile
		}
		s, info, err := b.openStream(context.Background(), rs.token)
		if err != nil {
			b.log.Warn("reopening a room after a reconnect; trying again in a second", "room", rs.name, "err", err)
			time.AfterFunc(time.Second, func() { b.resyncRoom(rs) })
			return
		}
		b.later(func() { b.reopened(rs, s, info) })
	})
}

// reopened takes rs's stream as found again: a new epoch resets the room.
// Dispatcher only.
func (b *Broker) reopened(rs *roomSub, s jetstream.Stream, info *jetstream.StreamInfo) {
	epoch := info.Created.UnixMilli()
	rs.mu.Lock()
	lost := epoch != rs.epoch
	rs.stream, rs.ready = s, true
	if lost {
		rs.epoch, rs.last = epoch, 0
	}
	upTo := max(rs.pending, info.State.LastSeq)
	rs.mu.Unlock()
	if lost {
		// The new log's messages follow the reset, as live ones.
		rs.want, rs.held = 0, nil
		b.stats.resets.Add(1)
		b.log.Warn("a room's log was lost by NATS: it starts again", "room", rs.name, "epoch", epoch)
		b.mu.RLock()
		h := b.h
		b.mu.RUnlock()
		h.HandleReset(rs.name, chat.RoomState{Epoch: epoch})
	}
	b.catchUp(rs, upTo)
	b.auditAfterReopen(rs)
	if b.testOpen != nil {
		b.testOpen(rs.name)
	}
}

// Audits after a reconnect: this node asks a reopened room's stream where
// it ends itself, auditFirst after the reopen, then after twice as long
// each time up to auditLast (1, 2, 4, 8, 16 and 32 s), and fetches what it
// has not seen. Around a reconnect the stream's republished copies can be
// lost (sent while this node's subscription was not back on the server
// that republished them, or during the stream's leader election), and the
// other nodes' heartbeat tails (tails.go) are not enough: the publisher
// may be gone, its tails said for ten heartbeats before this node's room
// was ready again, and a room that then falls silent sends no later
// message to show the gap. Six stream-info requests per room per
// reconnect, at most maxOpens at a time (tailHeard).
const (
	auditFirst = time.Second
	auditLast  = 32 * time.Second
)

// auditAfterReopen schedules rs's audits. Dispatcher only (the audits run
// there too).
func (b *Broker) auditAfterReopen(rs *roomSub) {
	for d := auditFirst; d <= auditLast; d *= 2 {
		time.AfterFunc(d, func() {
			b.later(func() { b.tailHeard(rs.name, math.MaxUint64) }) // returns at once once the broker stopped
		})
	}
}
