// Package natsbroker is a chat.Broker that lets Parley nodes share rooms
// through NATS (github.com/nats-io/nats.go).
//
// Where order comes from: each room is a JetStream stream (memory storage,
// the last HistorySize messages) that captures <prefix>.in.<room> and
// republishes every stored message to <prefix>.room.<room> with its stream
// sequence number. The stream's sequence is the room's sequence number, so
// every node numbers and orders a room's messages the same way; a node that
// opens a room loads its history from the stream, a node that misses a
// republished message (a reconnect, a slow subscription) fetches it from
// the stream by number, and a client can resume on any node from the last
// number it saw. A room's epoch is its stream's creation time: if NATS
// loses the stream (a restart of a server without persistence), nodes make
// it again and tell their members the room was reset.
//
// Presence news travels on <prefix>.presence.<room>, direct messages on
// <prefix>.node.<node>.direct, broadcasts on <prefix>.control, heartbeats
// (with each node's load) on <prefix>.nodes; nicks are claimed in the
// key-value bucket <prefix>_nicks, access rules kept in <prefix>_rules,
// which every node watches.
//
// Nothing on the bus is trusted for its shape: heartbeats and rules are
// decoded strictly here, and the hub decodes and checks every message
// before a client sees it. Who may publish is NATS's to say: use its
// authentication (Config's credentials), which the embedded server
// (StartServer) always requires. A node subscribes per
// room it has members in, all into one channel drained by one goroutine:
// no goroutine per room.
package natsbroker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/chat"
)

// inboxSize is the channel all subscriptions deliver into. Past it NATS
// drops messages for this node (counted as slow); room messages are then
// fetched again from their stream.
const inboxSize = 1 << 16

// maxPending bounds the room messages awaiting NATS's acknowledgement;
// past it Publish waits (briefly, then fails).
const maxPending = 1 << 14

// Broker is a chat.Broker over NATS. Create it with New.
type Broker struct {
	cfg   Config
	log   *slog.Logger
	nc    *nats.Conn
	js    jetstream.JetStream
	nicks jetstream.KeyValue
	rules jetstream.KeyValue

	roomDir jetstream.KeyValue // which node has which room open (janitor.go)

	inbox chan *nats.Msg
	jobs  chan func()
	dms   directs // direct messages awaiting their answer
	acks  chan pending
	stop  chan struct{}
	wg    sync.WaitGroup

	mu     sync.RWMutex
	h      chat.BrokerHandler
	rooms  map[string]*roomSub  // by room name
	routes map[string]route     // by subject
	claims map[string]string    // nicks this node holds: key -> owner
	seen   map[string]time.Time // live nodes: when last heard from
	loads  map[string]chat.NodeInfo
	left   map[string]bool      // nodes gone (until heard from again)
	known  map[string]chat.Rule // rules by KV key, to tell which one a delete ends
	closed bool

	started time.Time
	stats   stats
	dropLog logLimit
}

var _ chat.Broker = (*Broker)(nil)

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
}

type routeKind uint8

const (
	routeRoom routeKind = iota
	routePresence
	routeDirect
	routeNodes
	routeControl
	routeStreamGone
)

type route struct {
	kind routeKind
	room *roomSub
}

// headers this broker sets or reads.
const (
	hdrNode      = "Parley-Node"
	hdrSequence  = "Nats-Sequence"
	hdrTimestamp = "Nats-Time-Stamp"
)

// New connects to NATS and prepares the nick bucket, or returns an error
// naming what failed. The broker delivers nothing before Run.
func New(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	b := &Broker{cfg: c, log: c.Logger.With("node", c.Node), inbox: make(chan *nats.Msg, inboxSize),
		jobs: make(chan func(), 1024), acks: make(chan pending, maxPending), stop: make(chan struct{}), rooms: make(map[string]*roomSub),
		routes: make(map[string]route), claims: make(map[string]string), seen: make(map[string]time.Time),
		left: make(map[string]bool), started: time.Now(), loads: make(map[string]chat.NodeInfo), known: make(map[string]chat.Rule)}
	opts, err := c.natsOptions()
	if err != nil {
		return nil, err
	}
	url := c.URL
	if c.Embedded != nil {
		url = "" // nats.InProcessServer connects
		opts = append(opts, nats.InProcessServer(c.Embedded.ns), nats.Token(c.Embedded.Token()))
	}
	nc, err := nats.Connect(url, append(opts,
		nats.Name("parley-"+c.Node),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectBufSize(-1), // while disconnected, publishing fails at once: senders are told
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			b.stats.disconnects.Add(1)
			b.log.Warn("disconnected from NATS", "err", err)
			b.pause()
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.stats.reconnects.Add(1)
			b.log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
			b.resync()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				b.stats.slow.Add(1)
				return
			}
			b.log.Warn("NATS error", "err", err)
		}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: connect to %q: %w", c.url(), err)
	}
	b.nc = nc
	b.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncTimeout(c.PublishTimeout), jetstream.WithDefaultTimeout(c.RequestTimeout))
	if err == nil {
		err = b.openNicks()
	}
	if err == nil {
		err = b.openRules()
	}
	if err == nil {
		err = b.openRooms()
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsbroker: JetStream at %q: %w", c.url(), err)
	}
	return b, nil
}

func (b *Broker) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.cfg.RequestTimeout)
}

func (b *Broker) openNicks() error {
	ctx, cancel := b.ctx()
	defer cancel()
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: b.cfg.Prefix + "_nicks", Storage: jetstream.MemoryStorage, History: 1})
	if err != nil {
		return fmt.Errorf("nick bucket: %w", err)
	}
	b.mu.Lock()
	b.nicks = kv
	b.mu.Unlock()
	return nil
}

// natsOptions are the credentials and TLS options of c.
func (c *Config) natsOptions() ([]nats.Option, error) {
	var o []nats.Option
	switch {
	case c.Token != "":
		o = append(o, nats.Token(c.Token))
	case c.User != "":
		o = append(o, nats.UserInfo(c.User, c.Password))
	case c.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("natsbroker: NKeySeedFile: %w", err)
		}
		o = append(o, opt)
	case c.CredsFile != "":
		if _, err := os.Stat(c.CredsFile); err != nil {
			return nil, fmt.Errorf("natsbroker: CredsFile: %w", err)
		}
		o = append(o, nats.UserCredentials(c.CredsFile))
	}
	if c.CAFile != "" {
		o = append(o, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" {
		o = append(o, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	return o, nil
}

// Run implements chat.Broker: it starts the dispatcher and the heartbeats,
// and hands h the access rules in force before it returns.
func (b *Broker) Run(h chat.BrokerHandler) error {
	b.mu.Lock()
	b.h = h
	b.mu.Unlock()
	for _, s := range []struct {
		subj string
		kind routeKind
	}{{b.cfg.Prefix + ".node." + b.cfg.Node + ".direct", routeDirect}, {b.cfg.Prefix + ".nodes", routeNodes},
		{b.cfg.Prefix + ".control", routeControl}, {streamDeleted + "*", routeStreamGone}} {
		if err := b.subscribe(s.subj, route{kind: s.kind}); err != nil {
			return err
		}
	}
	if err := b.watchRules(h); err != nil {
		return err
	}
	if err := b.listenAnswers(); err != nil {
		return err
	}
	if err := b.forgetOwnRooms(); err != nil {
		return fmt.Errorf("natsbroker: clearing the rooms a former run of node %q had open: %w", b.cfg.Node, err)
	}
	if b.cfg.RoomTTL > 0 {
		b.wg.Add(1)
		go b.janitor()
	}
	b.wg.Add(3)
	go b.dispatch()
	go b.heartbeat()
	go b.acknowledge()
	return nil
}

// streamDeleted prefixes JetStream's advisory that a stream was deleted.
const streamDeleted = "$JS.EVENT.ADVISORY.STREAM.DELETED."

// subscribe routes subj into the inbox.
func (b *Broker) subscribe(subj string, r route) error {
	b.mu.Lock()
	b.routes[subj] = r
	b.mu.Unlock()
	sub, err := b.nc.ChanSubscribe(subj, b.inbox)
	if err != nil {
		b.mu.Lock()
		delete(b.routes, subj)
		b.mu.Unlock()
		return fmt.Errorf("natsbroker: subscribe to %q: %w", subj, err)
	}
	_ = sub.SetPendingLimits(-1, -1) // the inbox is the bound
	switch r.kind {
	case routeRoom:
		r.room.msgs = sub
	case routePresence:
		r.room.pres = sub
	}
	return nil
}

// Node implements chat.Broker.
func (b *Broker) Node() string { return b.cfg.Node }

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
		MaxMsgs:     int64(b.cfg.HistorySize),
		MaxAge:      b.cfg.HistoryMaxAge,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,
		RePublish:   &jetstream.RePublish{Source: in, Destination: b.cfg.Prefix + ".room." + tok},
	}
}

// openStream makes room's stream, or finds it made by another node.
func (b *Broker) openStream(tok string) (jetstream.Stream, *jetstream.StreamInfo, error) {
	ctx, cancel := b.ctx()
	defer cancel()
	cfg := b.streamConfig(tok)
	s, err := b.js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		s, err = b.js.Stream(ctx, cfg.Name) // made by a node with other settings: use it as it is
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
func (b *Broker) Subscribe(room string) (chat.RoomState, error) {
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
	s, info, err := b.openStream(tok)
	if err != nil {
		b.unsubscribe(rs)
		return chat.RoomState{}, err
	}
	st, err := b.load(s, info)
	if err != nil {
		b.unsubscribe(rs)
		return chat.RoomState{}, err
	}
	rs.mu.Lock()
	rs.stream, rs.epoch, rs.last, rs.ready = s, st.Epoch, uint64(st.Seq), true
	catchUp := rs.pending > rs.last
	rs.mu.Unlock()
	if catchUp {
		b.later(func() { b.repair(rs, 0) }) // republished while loading
	}
	return st, nil
}

// load reads a stream's state and stored messages.
func (b *Broker) load(s jetstream.Stream, info *jetstream.StreamInfo) (chat.RoomState, error) {
	st := chat.RoomState{Epoch: info.Created.UnixMilli(), Seq: int64(info.State.LastSeq)}
	if info.State.Msgs == 0 {
		return st, nil
	}
	ctx, cancel := b.ctx()
	defer cancel()
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: info.State.FirstSeq})
	if err != nil {
		return st, fmt.Errorf("natsbroker: reading %q: %w", info.Config.Name, err)
	}
	batch, err := c.Fetch(int(info.State.LastSeq-info.State.FirstSeq+1), jetstream.FetchMaxWait(b.cfg.RequestTimeout))
	if err != nil {
		return st, fmt.Errorf("natsbroker: reading %q: %w", info.Config.Name, err)
	}
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil || md.Sequence.Stream > info.State.LastSeq {
			continue
		}
		st.Messages = append(st.Messages, chat.StoredMessage{Seq: int64(md.Sequence.Stream), Data: m.Data(), Time: md.Timestamp.UnixNano()})
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return st, fmt.Errorf("natsbroker: reading %q: %w", info.Config.Name, err)
	}
	return st, nil
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

// pending is a publication awaiting its acknowledgement.
type pending struct {
	f     jetstream.PubAckFuture
	room  string
	msg   *nats.Msg
	retry bool // published again after its room's stream was re-created
	done  func(error)
}

// Publish implements chat.Broker: an asynchronous JetStream publish; done
// runs when NATS acknowledges it (or does not, within PublishTimeout).
func (b *Broker) Publish(room string, msg []byte, id string, done func(error)) {
	b.mu.RLock()
	rs, closed := b.rooms[room], b.closed
	b.mu.RUnlock()
	fail := func(err error) {
		b.stats.publishErrors.Add(1)
		if done != nil {
			done(err)
		}
	}
	if closed {
		fail(chat.ErrBrokerNotRunning)
		return
	}
	subj := b.cfg.Prefix + ".in." + token(room)
	if rs != nil {
		subj = rs.subIn
	}
	m := &nats.Msg{Subject: subj, Data: msg}
	if id != "" {
		m.Header = nats.Header{jetstream.MsgIDHeader: {id}} // JetStream drops a repeat within its duplicate window
	}
	f, err := b.js.PublishMsgAsync(m)
	if err != nil {
		fail(fmt.Errorf("natsbroker: publish to %q: %w", room, err))
		return
	}
	b.stats.published.Add(1)
	if done != nil {
		select {
		case b.acks <- pending{f: f, room: room, msg: m, done: done}:
		case <-b.stop: // closed meanwhile: nobody will wait for the ack
			done(chat.ErrBrokerNotRunning)
		}
	}
}

// acknowledge calls the done functions of publications as NATS answers
// them (or they time out), in publish order.
func (b *Broker) acknowledge() {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		case p := <-b.acks:
			select {
			case <-p.f.Ok():
				p.done(nil)
			case err := <-p.f.Err():
				if !p.retry && noStream(err) {
					// The room's stream is gone (deleted under us): make it
					// again now, not at the next reconnect, and publish
					// once more.
					b.later(func() { b.recreate(p) })
					continue
				}
				b.stats.publishErrors.Add(1)
				p.done(fmt.Errorf("natsbroker: publish to %q: %w", p.room, err))
			}
		}
	}
}

// noStream reports whether a publication failed for want of a stream.
func noStream(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// recreate makes p's room stream again, then publishes p once more. It
// runs on the dispatcher.
func (b *Broker) recreate(p pending) {
	b.mu.RLock()
	rs := b.rooms[p.room]
	b.mu.RUnlock()
	if rs != nil {
		b.resyncRoom(rs)
	} else if _, _, err := b.openStream(token(p.room)); err != nil {
		b.log.Warn("re-creating a room's stream", "room", p.room, "err", err)
	}
	b.stats.recreated.Add(1)
	f, err := b.js.PublishMsgAsync(p.msg)
	if err != nil {
		b.stats.publishErrors.Add(1)
		p.done(fmt.Errorf("natsbroker: publish to %q: %w", p.room, err))
		return
	}
	p.f, p.retry = f, true
	select {
	case b.acks <- p:
	default:
		// Full: wait elsewhere, so that the dispatcher never waits on the
		// acknowledger while it waits on the dispatcher (later).
		go func() {
			select {
			case b.acks <- p:
			case <-b.stop:
				p.done(chat.ErrBrokerNotRunning)
			}
		}()
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

// PublishPresence implements chat.Broker.
func (b *Broker) PublishPresence(room string, data []byte) error {
	m := nats.NewMsg(b.cfg.Prefix + ".presence." + token(room))
	m.Header.Set(hdrNode, b.cfg.Node)
	m.Data = data
	if err := b.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("natsbroker: presence of %q: %w", room, err)
	}
	return nil
}

// alive reports whether node is this one or has been heard from lately.
// Until this node has listened for three heartbeats, every node is
// presumed alive.
func (b *Broker) alive(node string) bool {
	if node == b.cfg.Node {
		return true
	}
	b.mu.RLock()
	_, ok := b.seen[node]
	left := b.left[node]
	b.mu.RUnlock()
	return ok || !left && time.Since(b.started) < 3*b.cfg.Heartbeat
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
// take-over of a record whose node is gone.
func (b *Broker) ClaimNick(key, owner string) error {
	ctx, cancel := b.ctx()
	defer cancel()
	kv, k := b.kv(), token(key)
	_, err := kv.Create(ctx, k, []byte(owner))
	if errors.Is(err, jetstream.ErrKeyExists) {
		var e jetstream.KeyValueEntry
		if e, err = kv.Get(ctx, k); err == nil {
			switch held := string(e.Value()); {
			case held == owner:
			case b.ownerAlive(held):
				return chat.ErrNickClaimed
			default:
				_, err = kv.Update(ctx, k, []byte(owner), e.Revision())
			}
		}
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return chat.ErrNickClaimed // taken meanwhile
		}
		return fmt.Errorf("natsbroker: claim nick %q: %w", key, err)
	}
	b.mu.Lock()
	b.claims[key] = owner
	b.mu.Unlock()
	return nil
}

// ReleaseNick implements chat.Broker.
func (b *Broker) ReleaseNick(key, owner string) error {
	b.mu.Lock()
	if b.claims[key] == owner {
		delete(b.claims, key)
	}
	b.mu.Unlock()
	ctx, cancel := b.ctx()
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
func (b *Broker) LookupNick(key string) (string, error) {
	ctx, cancel := b.ctx()
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

// Close implements chat.Broker: the other nodes are told this one leaves.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	if b.nc.IsConnected() {
		b.beat(true)
		_ = b.nc.FlushTimeout(time.Second) // the others hear of it now, not in three heartbeats
	}
	close(b.stop)
	b.wg.Wait()
	b.nc.Close()
	return nil
}

// later queues f for the dispatcher goroutine, where every handler call
// is made.
func (b *Broker) later(f func()) {
	select {
	case b.jobs <- f:
	case <-b.stop:
	}
}

// dispatch hands everything NATS delivers to the handler, one at a time.
func (b *Broker) dispatch() {
	defer b.wg.Done()
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	for {
		select {
		case <-b.stop:
			return
		case f := <-b.jobs:
			f()
		case m := <-b.inbox:
			b.mu.RLock()
			r, ok := b.routes[m.Subject]
			b.mu.RUnlock()
			if !ok && strings.HasPrefix(m.Subject, streamDeleted) {
				r, ok = route{kind: routeStreamGone}, true
			}
			if !ok {
				continue // unsubscribed meanwhile
			}
			switch r.kind {
			case routeRoom:
				b.roomMessage(h, r.room, m)
			case routePresence:
				if node := m.Header.Get(hdrNode); node != b.cfg.Node && node != "" {
					b.stats.presenceReceived.Add(1)
					h.HandlePresence(r.room.name, node, m.Data)
				}
			case routeDirect:
				b.stats.directReceived.Add(1)
				b.answerDirect(m, h.HandleDirect(m.Data))
			case routeNodes:
				b.nodeBeat(h, m)
			case routeControl:
				b.stats.controlReceived.Add(1)
				h.HandleControl(m.Data)
			case routeStreamGone:
				b.streamGone(strings.TrimPrefix(m.Subject, streamDeleted))
			}
		}
	}
}

// roomMessage delivers a republished room message, after any it finds
// missing.
func (b *Broker) roomMessage(h chat.BrokerHandler, rs *roomSub, m *nats.Msg) {
	seq, err := strconv.ParseUint(m.Header.Get(hdrSequence), 10, 64)
	if err != nil {
		b.log.Warn("a room message without a sequence number", "room", rs.name, "subject", m.Subject)
		return
	}
	if ts, err := time.Parse(time.RFC3339Nano, m.Header.Get(hdrTimestamp)); err == nil {
		b.stats.lag.observe(time.Since(ts))
	}
	rs.mu.Lock()
	if !rs.ready {
		rs.pending = max(rs.pending, seq)
		rs.mu.Unlock()
		return
	}
	from := rs.last + 1
	if seq < from {
		rs.mu.Unlock()
		b.stats.duplicates.Add(1)
		return
	}
	rs.mu.Unlock()
	if seq > from {
		b.repair(rs, seq-1)
	}
	rs.mu.Lock()
	deliver := seq > rs.last
	rs.last = max(rs.last, seq)
	rs.mu.Unlock()
	if deliver {
		b.stats.received.Add(1)
		h.HandleMessage(rs.name, int64(seq), m.Data)
	}
}

// repair fetches and delivers rs's messages after the last delivered up to
// upTo (0: up to the highest seen before ready).
func (b *Broker) repair(rs *roomSub, upTo uint64) {
	rs.mu.Lock()
	if upTo == 0 {
		upTo = rs.pending
	}
	from, s := rs.last+1, rs.stream
	rs.mu.Unlock()
	if s == nil {
		return
	}
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	for seq := from; seq <= upTo; seq++ {
		ctx, cancel := b.ctx()
		m, err := s.GetMsg(ctx, seq)
		cancel()
		rs.mu.Lock()
		deliver := seq > rs.last
		if deliver {
			rs.last = seq
		}
		rs.mu.Unlock()
		if err != nil {
			b.stats.lost.Add(1) // beyond the stream's history, or NATS is away
			continue
		}
		if deliver {
			b.stats.repaired.Add(1)
			b.stats.received.Add(1)
			h.HandleMessage(rs.name, int64(seq), m.Data)
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
		if err := b.openNicks(); err != nil {
			b.log.Warn("reopening the nick bucket", "err", err)
			return
		}
		b.mu.RLock()
		claims := make(map[string]string, len(b.claims))
		for k, o := range b.claims {
			claims[k] = o
		}
		b.mu.RUnlock()
		for k, o := range claims {
			if err := b.ClaimNick(k, o); err != nil {
				b.log.Warn("claiming a nick again after a reconnect", "nick", k, "err", err)
			}
		}
	}()
	for _, rs := range rooms {
		b.later(func() { b.resyncRoom(rs) })
	}
}

func (b *Broker) resyncRoom(rs *roomSub) {
	b.mu.RLock()
	current, closed := b.rooms[rs.name] == rs, b.closed
	b.mu.RUnlock()
	if !current || closed {
		return // unsubscribed meanwhile
	}
	s, info, err := b.openStream(rs.token)
	if err != nil {
		b.log.Warn("reopening a room after a reconnect; trying again in a second", "room", rs.name, "err", err)
		time.AfterFunc(time.Second, func() { b.later(func() { b.resyncRoom(rs) }) })
		return
	}
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
		b.stats.resets.Add(1)
		b.log.Warn("a room's log was lost by NATS: it starts again", "room", rs.name, "epoch", epoch)
		b.mu.RLock()
		h := b.h
		b.mu.RUnlock()
		h.HandleReset(rs.name, chat.RoomState{Epoch: epoch})
	}
	b.repair(rs, upTo)
}

// beatMsg is a heartbeat.
type beatMsg struct {
	Node    string `json:"node"`
	Bye     bool   `json:"bye,omitempty"`
	Clients int    `json:"clients"`
	Users   int    `json:"users"`
	Rooms   int    `json:"rooms"`
}

func (b *Broker) beat(bye bool) {
	bm := beatMsg{Node: b.cfg.Node, Bye: bye}
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	if h != nil {
		l := h.NodeLoad()
		bm.Clients, bm.Users, bm.Rooms = l.Clients, l.Users, l.Rooms
	}
	data, _ := json.Marshal(bm)
	_ = b.nc.Publish(b.cfg.Prefix+".nodes", data) // fails only while disconnected
}

// heartbeat says this node is alive and finds the nodes that no longer
// are.
func (b *Broker) heartbeat() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.Heartbeat)
	defer t.Stop()
	b.beat(false)
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			b.beat(false)
			if !b.nc.IsConnected() {
				continue // silence is ours, not theirs
			}
			var gone []string
			b.mu.Lock()
			for n, at := range b.seen {
				if now.Sub(at) > 3*b.cfg.Heartbeat {
					delete(b.seen, n)
					delete(b.loads, n)
					b.left[n] = true
					gone = append(gone, n)
				}
			}
			b.mu.Unlock()
			for _, n := range gone {
				b.later(func() { b.gone(n) })
			}
		}
	}
}

func (b *Broker) nodeBeat(h chat.BrokerHandler, m *nats.Msg) {
	var bm beatMsg
	if err := strict(m.Data, &bm); err != nil || !validName(bm.Node, 16) || bm.Clients < 0 || bm.Users < 0 || bm.Rooms < 0 {
		b.stats.droppedBeats.Add(1)
		if b.dropLog.allow() {
			b.log.Warn("dropping a heartbeat that does not decode", "err", err, "data", string(m.Data[:min(len(m.Data), 200)]))
		}
		return
	}
	if bm.Node == b.cfg.Node {
		return
	}
	b.mu.Lock()
	_, known := b.seen[bm.Node]
	if bm.Bye {
		delete(b.seen, bm.Node)
		delete(b.loads, bm.Node)
		b.left[bm.Node] = true
	} else {
		b.seen[bm.Node] = time.Now()
		b.loads[bm.Node] = chat.NodeInfo{Node: bm.Node, Clients: bm.Clients, Users: bm.Users, Rooms: bm.Rooms}
		delete(b.left, bm.Node)
	}
	b.mu.Unlock()
	switch {
	case bm.Bye: // known or not: it may have held nicks or members heard of before its first heartbeat
		b.gone(bm.Node)
	case !bm.Bye && !known:
		b.log.Info("a node joined the cluster", "peer", bm.Node)
	}
}

func (b *Broker) gone(node string) {
	b.stats.nodesGone.Add(1)
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	h.HandleNodeGone(node)
}

// liveNodes counts the other nodes heard from lately.
func (b *Broker) liveNodes() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.seen)
}

// stats are the broker's counters.
type stats struct {
	published, publishErrors, received, repaired, lost, duplicates atomic.Uint64
	presenceReceived, directReceived, resets, nodesGone, slow      atomic.Uint64
	reconnects, disconnects, controlReceived, recreated            atomic.Uint64
	droppedBeats, droppedRules, streamsDeleted                     atomic.Uint64
	lag                                                            histogram
}

// Stats is a snapshot of a Broker's counters.
type Stats struct {
	Connected        bool   // connected to NATS now
	Published        uint64 // room messages handed to NATS
	PublishErrors    uint64 // room messages NATS did not take (refused, timed out, disconnected)
	Received         uint64 // room messages handed to the hub (repaired ones included)
	Repaired         uint64 // room messages fetched from their stream after a miss
	Lost             uint64 // missed room messages the stream no longer had
	Duplicates       uint64 // room messages received twice (dropped)
	PresenceReceived uint64 // presence news from other nodes
	DirectReceived   uint64 // direct messages from other nodes
	Resets           uint64 // rooms whose stream NATS lost (started again)
	NodesGone        uint64 // nodes that left or went silent
	SlowConsumer     uint64 // times NATS dropped messages for this node
	Reconnects       uint64 // reconnections to NATS
	Disconnects      uint64 // losses of the NATS connection
	ControlReceived  uint64 // broadcasts received (DMs to users, disconnections)
	Recreated        uint64 // room streams made again after they were deleted under this node
	DroppedBeats     uint64 // heartbeats that did not decode strictly (dropped)
	DroppedRules     uint64 // rule records that did not decode strictly (dropped)
	StreamsDeleted   uint64 // streams of rooms no node had open for RoomTTL, deleted by this node
	Nodes            int    // other live nodes
	// Lag is the time from a room message's storing in its stream to its
	// arrival here: counts per LagBuckets() bound, the last one above them
	// all, and their sum.
	LagCounts []uint64
	LagSum    time.Duration
}

// lagBuckets are the upper bounds of Stats.LagCounts.
var lagBuckets = [...]time.Duration{250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond,
	2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond,
	50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second}

// LagBuckets returns the upper bounds of Stats.LagCounts.
func LagBuckets() []time.Duration { return slices.Clone(lagBuckets[:]) }

// histogram counts durations per lagBuckets bound (the last slot: above).
type histogram struct {
	counts [len(lagBuckets) + 1]atomic.Uint64
	sum    atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for i < len(lagBuckets) && d > lagBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// Stats returns a snapshot of the broker's counters.
func (b *Broker) Stats() Stats {
	s := &b.stats
	st := Stats{Connected: b.nc.IsConnected(), Published: s.published.Load(), PublishErrors: s.publishErrors.Load(),
		Received: s.received.Load(), Repaired: s.repaired.Load(), Lost: s.lost.Load(), Duplicates: s.duplicates.Load(),
		PresenceReceived: s.presenceReceived.Load(), DirectReceived: s.directReceived.Load(), Resets: s.resets.Load(),
		NodesGone: s.nodesGone.Load(), SlowConsumer: s.slow.Load(), Reconnects: s.reconnects.Load(),
		Disconnects: s.disconnects.Load(), Nodes: b.liveNodes(), LagSum: time.Duration(s.lag.sum.Load()),
		ControlReceived: s.controlReceived.Load(), Recreated: s.recreated.Load(), DroppedBeats: s.droppedBeats.Load(),
		DroppedRules: s.droppedRules.Load(), StreamsDeleted: s.streamsDeleted.Load()}
	st.LagCounts = make([]uint64, len(s.lag.counts))
	for i := range s.lag.counts {
		st.LagCounts[i] = s.lag.counts[i].Load()
	}
	return st
}
