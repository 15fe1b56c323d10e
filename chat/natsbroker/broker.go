// Package natsbroker is a chat.Broker and chat.PresenceManager that lets
// Parley nodes share rooms through NATS (github.com/nats-io/nats.go).
//
// Where order comes from: each room is a JetStream stream (memory storage,
// or file storage with Config.FileStorage; the last LogSize messages, of
// which the last HistorySize are the history)
// that captures <prefix>.in.<room> and
// republishes every stored message to <prefix>.room.<room> with its stream
// sequence number. The stream's sequence is the room's sequence number, so
// every node numbers and orders a room's messages the same way; a node that
// opens a room loads its history from the stream, a node that misses a
// republished message (a reconnect, a slow subscription) fetches the
// missing range from the stream, and a client can resume on any node from
// the last number it saw. A room's epoch is its stream's creation time: if NATS
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
// room it has members in, all into one channel drained by one goroutine
// (the dispatcher): no goroutine per room. The dispatcher never waits on
// NATS: repairs and reopened streams are fetched on goroutines of their
// own and handed back to it; heartbeats have their own subscription and
// goroutine, so a node is declared gone for its silence only.
//
// Streams follow the rooms: each node records the rooms it has open in
// <prefix>_rooms, and the live node with the smallest name deletes the
// stream of a room no node has had open for Config.RoomTTL.
//
// Publishing: a room's messages go out in order under message ids, and a
// node keeps them through an outage or a leader election and sends them
// again (outbox.go): JetStream stores each once, none after one accepted
// later. With Config.Replicas (3 on a NATS cluster of three servers or
// more) streams and buckets survive the death of a server.
//
// The files: broker.go (connection, Run, Close, the dispatcher),
// roomlog.go (streams, Subscribe, repairs), outbox.go (Publish),
// presence.go,
// directory.go (nicks), direct.go (direct messages and their answers),
// liveness.go (heartbeats), janitor.go (streams of abandoned rooms),
// rules.go (access rules and broadcasts), stats.go, server.go (embedded
// NATS).
package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/chat"
)

// maxOpens bounds the room streams reopened at once after a reconnect.
const maxOpens = 16

// inboxSize is the channel all subscriptions deliver into. Past it NATS
// drops messages for this node (counted as slow); room messages are then
// fetched again from their stream.
const inboxSize = 1 << 16

// Broker is a chat.Broker over NATS. Create it with New.
type Broker struct {
	cfg   Config
	log   *slog.Logger
	nc    *nats.Conn
	js    jetstream.JetStream
	nicks jetstream.KeyValue
	rules jetstream.KeyValue
	reads jetstream.KeyValue // read positions (reads.go)

	roomDir jetstream.KeyValue // which node has which room open (janitor.go)

	inbox chan *nats.Msg
	jobs  chan func()
	opens chan struct{} // a semaphore: streams being reopened at once (resyncRoom)

	// Tests only: called before a repair fetches; a room message dropped
	// as if NATS had lost it.
	testFetch func(room string)
	testDrop  func(room string, seq uint64) bool
	testBeat  func(bye bool)
	testOpen  func(room string) // after a room's stream is reopened (resync)
	dms       directs           // direct messages awaiting their answer
	out       *outbox           // room messages on their way to NATS
	runID     string            // this run of the node: starts the ids of messages published without one
	stop      chan struct{}
	wg        sync.WaitGroup

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

	replicas int // of every stream and bucket (Config.Replicas, or chosen)
	started  time.Time
	stats    stats
	dropLog  logLimit
}

var _ chat.Broker = (*Broker)(nil)

type routeKind uint8

const (
	routeRoom routeKind = iota
	routePresence
	routeDirect
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
		jobs: make(chan func(), 1024), opens: make(chan struct{}, maxOpens), stop: make(chan struct{}), rooms: make(map[string]*roomSub),
		routes: make(map[string]route), claims: make(map[string]string), seen: make(map[string]time.Time),
		left: make(map[string]bool), started: time.Now(), loads: make(map[string]chat.NodeInfo), known: make(map[string]chat.Rule),
		runID: c.Node + "." + randomNode()}
	b.out = newOutbox(b)
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
			b.out.disconnected()
			b.pause()
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.stats.reconnects.Add(1)
			b.log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
			b.out.reconnected()
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
	b.replicas = c.Replicas
	if b.replicas == 0 {
		b.replicas = defaultReplicas(len(nc.Servers()))
	}
	b.js, err = jetstream.New(nc, jetstream.WithDefaultTimeout(c.RequestTimeout))
	if err == nil {
		err = b.openNicks()
	}
	if err == nil {
		err = b.openRules()
	}
	if err == nil {
		err = b.openRooms()
	}
	if err == nil {
		err = b.openReads()
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsbroker: JetStream at %q: %w", c.url(), err)
	}
	return b, nil
}

// defaultReplicas is Config.Replicas's choice for a NATS of servers
// servers: 3 where three can hold a copy each, else 1.
func defaultReplicas(servers int) int {
	if servers >= 3 {
		return 3
	}
	return 1
}

// JetStream's error codes for replicas it cannot place (nats-server's
// JSStreamReplicasNotSupportedErr, JSInsufficientResourcesErr,
// JSClusterNoPeersErrF).
const (
	errReplicasNotSupported  jetstream.ErrorCode = 10074
	errInsufficientResources jetstream.ErrorCode = 10023
	errNoPeers               jetstream.ErrorCode = 10005
	errStorageExceeded       jetstream.ErrorCode = 10047 // JSStorageResourcesExceededErr
)

// storeErr says what err, from making a room's stream, means when NATS
// has no room left for its reservation (ServerConfig.MaxStore, a server's
// JetStream max_file_store / max_memory_store): chat.ErrStoreFull.
func storeErr(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == errStorageExceeded || apiErr.ErrorCode == errInsufficientResources) {
		return fmt.Errorf("%w: NATS has no room left for another room's log (its JetStream store limit): %w", chat.ErrStoreFull, err)
	}
	return err
}

// replicaErr says what err, from making or changing a stream or bucket,
// means when it is that NATS cannot hold the replicas asked for.
func (b *Broker) replicaErr(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && slices.Contains([]jetstream.ErrorCode{errReplicasNotSupported, errInsufficientResources, errNoPeers}, apiErr.ErrorCode) {
		return fmt.Errorf("Replicas %d: this NATS cannot hold %d copies (a lone server holds 1; a JetStream cluster as many as it has servers): %w", b.replicas, b.replicas, err)
	}
	return err
}

// provision makes or opens a stream or bucket with make, retrying within
// RequestTimeout. A JetStream cluster leaves all but one unanswered of the
// requests that make the same stream at once (nodes joining a new room
// together, starting together): the stream is made all the same, and
// asking again finds it. So each attempt waits a short while, longer each
// time, and only what may go away (retryable) is tried again.
func (b *Broker) provision(parent context.Context, make func(ctx context.Context) error) error {
	deadline := time.Now().Add(b.cfg.RequestTimeout)
	wait := provisionWait
	for {
		ctx, cancel := context.WithTimeout(parent, min(wait, time.Until(deadline)))
		err := make(ctx)
		cancel()
		if err == nil || !retryable(err) || time.Until(deadline) <= 0 {
			return err
		}
		if parent.Err() != nil {
			return parent.Err()
		}
		b.stats.provisionRetries.Add(1)
		wait *= 2
	}
}

// retryable reports whether a provisioning error may go away by asking
// again: a timeout; a stream another node is making right now (a
// JetStream cluster may answer "not found" for it in the meantime); no
// peers to place the replicas on (a cluster just started, whose leader
// does not know all its servers yet, or one whose server is restarting).
func retryable(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == errNoPeers
}

// provisionWait is a provisioning request's first wait for its answer.
const provisionWait = 500 * time.Millisecond

func (b *Broker) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.cfg.RequestTimeout)
}

// ctxFrom bounds a caller's ctx by the broker's RequestTimeout.
func (b *Broker) ctxFrom(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, b.cfg.RequestTimeout)
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
	}{{b.cfg.Prefix + ".node." + b.cfg.Node + ".direct", routeDirect},
		{b.cfg.Prefix + ".control", routeControl}, {streamDeleted + "*", routeStreamGone}} {
		if err := b.subscribe(s.subj, route{kind: s.kind}); err != nil {
			return err
		}
	}
	// Heartbeats have a channel and a goroutine of their own (heartbeat).
	beats := make(chan *nats.Msg, beatsSize)
	if _, err := b.nc.ChanSubscribe(b.cfg.Prefix+".nodes", beats); err != nil {
		return fmt.Errorf("natsbroker: subscribe to heartbeats: %w", err)
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
	if err := b.out.listen(); err != nil {
		return err
	}
	b.wg.Add(3)
	go b.dispatch()
	go b.heartbeat(beats)
	go b.out.sweep()
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

// Close implements chat.Broker: the other nodes are told this one leaves.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	// The heartbeat goroutine stops before the bye is said: a heartbeat
	// published after it would make the others take this node for alive
	// again (and its nicks for held) until three heartbeats had passed.
	close(b.stop)
	b.wg.Wait()
	if b.nc.IsConnected() {
		b.beat(true)
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = b.nc.FlushWithContext(fctx) // the others hear of it now, not in three heartbeats
		cancel()
	}
	b.nc.Close()
	return nil
}

// post queues f for the dispatcher like later, without ever waiting: a
// goroutine waits instead when the queue is full. For goroutines the
// dispatcher may itself wait on.
func (b *Broker) post(f func()) {
	select {
	case b.jobs <- f:
	default:
		go b.later(f)
	}
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
			case routeControl:
				b.stats.controlReceived.Add(1)
				h.HandleControl(m.Data)
			case routeStreamGone:
				b.streamGone(strings.TrimPrefix(m.Subject, streamDeleted))
			}
		}
	}
}
