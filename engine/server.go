package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ltls "github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/parleyhq/parley/internal/wsproto"
)

// maxRequestSize caps an HTTP request, headers included; nbhttp drops a
// connection whose request grows past it.
const maxRequestSize = 64 << 10

// shutdownReason is the reason of the close frame Shutdown sends.
const shutdownReason = ReasonShutdown

// Server is Parley's application server: HTTP routes, a document root and
// WebSocket endpoints on one nbio engine, with no goroutine per connection.
//
// Configure it with Handle and Mount, then Start it; stop it with Shutdown
// (graceful) or Close. A Server cannot be restarted.
type Server struct {
	cfg       Config
	log       *slog.Logger
	eng       *nbhttp.Engine
	ln        *listener
	writers   []*writer
	endpoints []*Endpoint
	mounts    map[string]*Endpoint
	routes    map[string]http.Handler
	subtrees  []string // routes ending in /, longest first
	root      http.Handler
	origins   map[string]bool
	// listenName is Config.Addr's host when it is a name, lower-case:
	// the own origin is accepted with it as Host (ownHost).
	listenName string
	limits     *addrLimits
	tls        *ltls.Config // nil: plain HTTP
	anyOrigin  bool
	tickEvery  time.Duration

	stats     serverStats
	deflaters deflaters // pooled flate writers, by level
	nextID    atomic.Uint64
	live      atomic.Int64 // open clients over all endpoints, plus upgrades in progress
	silent    silentGuests // guests that sent nothing yet: dropped first when full

	// Received messages not yet handled; Shutdown waits for them so that
	// what they send precedes the close frames.
	inflight     atomic.Int64
	inflightDone chan struct{} // signalled when inflight drops to zero while draining
	pendingIn    atomic.Int64  // bytes of those messages (Config.MaxPendingInputTotal)

	started   atomic.Bool
	closed    atomic.Bool // Shutdown or Close was called: Start returns ErrServerClosed
	draining  atomic.Bool
	drained   chan struct{} // closed when live reaches 0 while draining
	drainOnce sync.Once
	stop      chan struct{} // stops the writers and the ticker
	wg        sync.WaitGroup
	stopOnce  sync.Once
	stopErr   error
}

// New returns a Server for cfg, or an error naming the first invalid field.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	s := &Server{
		cfg:          c,
		log:          c.Logger,
		mounts:       make(map[string]*Endpoint),
		routes:       make(map[string]http.Handler),
		origins:      make(map[string]bool),
		tickEvery:    time.Second,
		drained:      make(chan struct{}),
		inflightDone: make(chan struct{}, 1),
		stop:         make(chan struct{}),
	}
	s.limits = newAddrLimits(c.MaxConnectionsPerAddr, c.MaxConnectionsPerNetwork, c.ConnectRatePerAddr)
	if c.TLSCertFile != "" {
		cert, err := ltls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("engine: TLSCertFile %q, TLSKeyFile %q: %w", c.TLSCertFile, c.TLSKeyFile, err)
		}
		s.tls = &ltls.Config{Certificates: []ltls.Certificate{cert}, MinVersion: ltls.VersionTLS12,
			// Full-size records and AEAD suites only, so that the send
			// queue can count ciphertext exactly (tlsRecordOverhead).
			DynamicRecordSizingDisabled: true,
			CipherSuites: []uint16{
				ltls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, ltls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
				ltls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, ltls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
				ltls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, ltls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
			}}
	}
	if h, _, err := net.SplitHostPort(c.Addr); err == nil {
		s.listenName = strings.ToLower(h)
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			s.anyOrigin = true
			continue
		}
		co, _ := canonicalOrigin(o) // Validate checked it
		s.origins[co] = true
	}
	if c.Root != nil {
		root, err := newStaticRoot(c.Root)
		if err != nil {
			return nil, fmt.Errorf("engine: Root: %w", err)
		}
		s.root = root
	}
	s.stats.writers = make([]writerStats, c.Writers)
	s.writers = make([]*writer, c.Writers)
	for i := range s.writers {
		s.writers[i] = newWriter(s, i)
	}
	return s, nil
}

// Handle routes requests for exactly path to h; a path ending in '/'
// routes its whole subtree ("/api/" takes "/api/v1/stats"), unless a
// longer route or a mount names the request's path. It must be called
// before Start.
func (s *Server) Handle(path string, h http.Handler) error {
	if err := s.checkPath(path); err != nil {
		return err
	}
	s.routes[path] = h
	if strings.HasSuffix(path, "/") {
		s.subtrees = append(s.subtrees, path)
		slices.SortFunc(s.subtrees, func(a, b string) int { return len(b) - len(a) }) // longest first
	}
	return nil
}

// MountOptions are an endpoint's own settings. The zero value, or nil,
// takes the server's.
type MountOptions struct {
	// MaxMessageSize caps a received message on this endpoint, in bytes;
	// 0 takes Config.MaxMessageSize.
	MaxMessageSize int

	// Inline calls OnMessage on the goroutine that read the message (a
	// poller's), once OnOpen has returned and no earlier message of the
	// client waits, instead of handing it to the executor: a
	// request/response exchange then wakes no other goroutine (with the
	// sender writing a lone reply itself, a 16-byte echo round trip went
	// from a median of 33 us to 16 us, make roundtrip). Only for an application whose OnMessage
	// never blocks and returns quickly, such as Echo: while it runs, the
	// poller reads none of its other clients.
	Inline bool
}

// Mount serves the WebSocket application app on exactly path and returns
// its endpoint. It must be called before Start.
func (s *Server) Mount(path string, app Application) (*Endpoint, error) {
	return s.MountWith(path, app, nil)
}

// MountWith is Mount with the endpoint's own options.
func (s *Server) MountWith(path string, app Application, opts *MountOptions) (*Endpoint, error) {
	if err := s.checkPath(path); err != nil {
		return nil, err
	}
	if app == nil {
		return nil, fmt.Errorf("engine: mount %q: nil Application", path)
	}
	maxMessage := s.cfg.MaxMessageSize
	if opts != nil && opts.MaxMessageSize != 0 {
		if opts.MaxMessageSize < 0 || opts.MaxMessageSize > MaxMessageSizeLimit {
			return nil, fmt.Errorf("engine: mount %q: MaxMessageSize (%d) must be 1 to %d", path, opts.MaxMessageSize, MaxMessageSizeLimit)
		}
		maxMessage = opts.MaxMessageSize
	}
	ep := newEndpoint(s, path, app, maxMessage)
	ep.inline = opts != nil && opts.Inline
	s.mounts[path] = ep
	s.endpoints = append(s.endpoints, ep)
	return ep, nil
}

func (s *Server) checkPath(path string) error {
	if s.started.Load() {
		return fmt.Errorf("engine: route %q: %w", path, ErrStarted)
	}
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("engine: route %q must start with /", path)
	}
	if s.routes[path] != nil || s.mounts[path] != nil {
		return fmt.Errorf("engine: route %q is already taken", path)
	}
	return nil
}

// Start listens on Config.Addr, calls every application's OnStart and starts
// serving in the background. It returns once the server accepts
// connections, or with the error that prevented it.
func (s *Server) Start() error {
	if s.closed.Load() {
		return ErrServerClosed
	}
	if !s.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	var lc net.ListenConfig
	if s.cfg.HeartbeatInterval > 0 {
		// The heartbeats find dead peers; TCP keepalives would cost four
		// setsockopt calls per accepted connection (and a handshake or a
		// request that stalls has its own timeout).
		lc.KeepAlive = -1
	}
	lc.Control = s.listenerOptions
	l, err := lc.Listen(context.Background(), "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("engine: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = newListener(l, s)
	for _, ep := range s.endpoints {
		if err := ep.app.OnStart(ep); err != nil {
			_ = l.Close()
			return fmt.Errorf("engine: OnStart of the application on %s: %w", ep.path, err)
		}
	}

	maxLoad := 0 // nbhttp's default
	if s.cfg.MaxConnections > 0 {
		// Room for plain HTTP requests and for answering refused upgrades.
		maxLoad = s.cfg.MaxConnections + 1024
	}
	addrs, addrsTLS := []string{s.cfg.Addr}, []string(nil)
	if s.tls != nil {
		addrs, addrsTLS = nil, addrs
	}
	s.eng = nbhttp.NewEngine(nbhttp.Config{
		Name:               "parley",
		Network:            "tcp",
		Addrs:              addrs,
		AddrsTLS:           addrsTLS,
		TLSConfig:          s.tls,
		Listen:             func(string, string) (net.Listener, error) { return s.ln, nil },
		NPoller:            s.cfg.Pollers,
		MaxLoad:            maxLoad,
		MaxWriteBufferSize: s.writeBufferBackstop(),
		KeepaliveTime:      s.cfg.HandshakeTimeout,
		ReadLimit:          maxRequestSize, // HTTP requests, headers included: a page and an upgrade need little
		SupportServerOnly:  true,
		Handler:            s,
	})
	s.eng.OnOpen(func(c net.Conn) {
		publishConn(c)
		s.limits.opened(c.RemoteAddr().String(), c)
	})
	s.eng.OnClose(func(c net.Conn, _ error) {
		// A WebSocket client gave its slot back in CloseAndClean; any
		// other connection (a page load, one that never upgraded) here.
		if nbc, ok := c.(*nbio.Conn); ok {
			if _, ws := nbc.Session().(*conn); ws {
				return
			}
		}
		s.limits.release(c.RemoteAddr().String())
	})
	s.eng.OnWrittenSize(func(c *nbio.Conn, _ []byte, n int) {
		if wc, ok := c.Session().(*conn); ok {
			wc.onWritten(n)
		}
	})
	for _, w := range s.writers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			w.run(s.stop)
		}()
	}
	s.wg.Add(1)
	go s.ticker()
	if err := s.eng.Start(); err != nil {
		close(s.stop)
		s.wg.Wait()
		return fmt.Errorf("engine: start nbio on %s: %w", s.cfg.Addr, err)
	}
	s.log.Info("listening", "addr", s.Addr().String(), "tls", s.tls != nil, "pollers", s.cfg.Pollers,
		"writers", s.cfg.Writers, "max_connections", s.cfg.MaxConnections)
	return nil
}

// writeBufferBackstop is nbio's own cap on a client's unsent bytes: twice
// the hard queue limit, plus room for the largest message an endpoint
// accepts (an echo of it is one frame, written at once).
func (s *Server) writeBufferBackstop() int {
	biggest := 0
	for _, ep := range s.endpoints {
		biggest = max(biggest, ep.maxMessage)
	}
	return 2*s.cfg.SendQueueHardLimit + biggest + wsproto.MaxHeaderLen
}

// publishConn runs on the accept goroutine after nbhttp built the
// connection and before its fd reaches a poller. The poller locks the
// connection's mutex before every read; locking it here too gives the race
// detector the happens-before edge that epoll provides but it cannot see, so
// nbhttp's unannotated reads of what accept wrote are not reported.
func publishConn(c net.Conn) {
	if nbc, ok := c.(*nbio.Conn); ok {
		_ = nbc.ExecuteLen()
	}
}

// ticker posts the once-a-tick checks (heartbeats, slow consumers) to every
// writer.
func (s *Server) ticker() {
	defer s.wg.Done()
	t := time.NewTicker(s.tickEvery)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			for _, w := range s.writers {
				w.post(job{kind: jobTick, now: now.UnixNano()})
			}
			s.limits.sweep(now)
		case <-s.stop:
			return
		}
	}
}

// Addr returns the address the server listens on (with the port chosen by
// the kernel when Config.Addr had port 0), or nil before Start.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// ServeHTTP routes a request: a mounted WebSocket path, then a Handle route,
// then the document root.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if ep := s.mounts[r.URL.Path]; ep != nil {
		s.upgrade(ep, w, r)
		return
	}
	if h := s.routes[r.URL.Path]; h != nil {
		h.ServeHTTP(w, r)
		return
	}
	for _, p := range s.subtrees {
		if strings.HasPrefix(r.URL.Path, p) {
			s.routes[p].ServeHTTP(w, r)
			return
		}
	}
	if s.root != nil {
		s.root.ServeHTTP(w, r)
		return
	}
	http.NotFound(w, r)
}

// Shutdown stops the server gracefully: it stops accepting, sends every
// client a close frame 1001 "server shutting down" after what is already
// queued to it, waits for the clients to leave (each is dropped at the
// latest Config.CloseTimeout after its close frame went out), then stops the
// engine and calls every application's OnStop. If ctx ends first, the
// remaining clients are dropped and ctx's error is returned. Calling it
// again returns the first call's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.shutdown(ctx, true) })
	return s.stopErr
}

// Close stops the server at once: clients are dropped without a close
// frame. It waits for their OnClose callbacks (at most a few seconds) and
// calls OnStop.
func (s *Server) Close() error {
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.stopErr = s.shutdown(ctx, false)
	})
	return s.stopErr
}

func (s *Server) shutdown(ctx context.Context, graceful bool) error {
	s.closed.Store(true)
	if !s.started.Load() || s.eng == nil {
		return ErrServerClosed
	}
	start := time.Now()
	s.draining.Store(true)
	s.ln.stopAccepting()
	if s.live.Load() == 0 {
		s.drainOnce.Do(func() { close(s.drained) })
	}
	if graceful {
		// Messages accepted before now are handled first: what their
		// handlers send goes out ahead of the close frames.
		for s.inflight.Load() > 0 && ctx.Err() == nil {
			select {
			case <-s.inflightDone: // sent only while draining, so none predates the loop
			case <-ctx.Done():
			}
		}
		// One close frame for all clients: it is the same bytes for each.
		for _, ep := range s.endpoints {
			f := newCloseFrame(StatusGoingAway, shutdownReason, 0)
			ep.postToWriters(job{kind: jobCloseAll, ep: ep, f: f}, nil)
		}
		select {
		case <-s.drained:
		case <-ctx.Done():
		}
	}
	err := s.eng.Shutdown(ctx)
	close(s.stop)
	s.wg.Wait()
	for _, ep := range s.endpoints {
		ep.app.OnStop()
	}
	st := s.Stats()
	s.log.Info("stopped", "graceful", graceful, "took", time.Since(start).Round(time.Millisecond).String(),
		"accepted", st.Accepted, "frames_encoded", st.FramesEncoded, "deliveries", st.Deliveries,
		"writes", st.Writes, "rounds", st.Rounds, "skipped_slow", st.SkippedSlow, "closed_slow", st.ClosedSlow)
	if err == nil {
		err = ctx.Err()
	}
	if errors.Is(err, context.Canceled) && !graceful {
		err = nil
	}
	return err
}

// doneInflight marks a received message handled.
func (s *Server) doneInflight() {
	if s.inflight.Add(-1) == 0 && s.draining.Load() {
		select {
		case s.inflightDone <- struct{}{}:
		default:
		}
	}
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Accepted:         s.stats.accepted.Load(),
		RefusedOrigin:    s.stats.refusedOrigin.Load(),
		RefusedLimit:     s.stats.refusedLimit.Load(),
		RefusedMalformed: s.stats.refusedBad.Load(),
		RefusedAddr:      s.stats.refusedAddr.Load(),
		RefusedNetwork:   s.stats.refusedNet.Load(),
		EvictedSilent:    s.stats.evicted.Load(),
		RateLimited:      s.stats.rateLimited.Load(),
		InputPaused:      s.stats.inputPaused.Load(),
		PendingInput:     s.pendingIn.Load(),
		RefusedByApp:     s.stats.refusedApp.Load(),
		DeflateClients:   s.stats.deflateConns.Load(),
		Compressed:       s.stats.compressed.Load(),
		CompressedIn:     s.stats.compressedIn.Load(),
		CompressedOut:    s.stats.compressedOut.Load(),
		Inflated:         s.stats.inflated.Load(),
		AppPanics:        s.stats.appPanics.Load(),
		FramesEncoded:    s.stats.framesEncoded.Load(),
	}
	for i := range s.stats.dispatch {
		st.DispatchBuckets[i] = s.stats.dispatch[i].Load()
	}
	st.DispatchSeconds = time.Duration(s.stats.dispatchNanos.Load()).Seconds()
	for i := range s.stats.closed {
		st.ClosedByCode[i] = s.stats.closed[i].Load()
	}
	for _, ep := range s.endpoints {
		st.Clients += ep.Count()
	}
	for i := range s.stats.writers {
		w := &s.stats.writers[i]
		st.Writes += w.writes.Load()
		st.FramesWritten += w.frames.Load()
		st.Deliveries += w.deliveries.Load()
		st.BytesWritten += w.bytes.Load()
		st.Rounds += w.rounds.Load()
		st.SenderRounds += w.callerRounds.Load()
		st.FlushSeconds += time.Duration(w.flushNanos.Load()).Seconds()
		st.SkippedSlow += w.skipped.Load()
		st.ClosedSlow += w.slowClosed.Load()
		st.HeartbeatTimeouts += w.heartbeatTimeouts.Load()
		st.PingsSent += w.pings.Load()
		for b := range w.batch {
			st.BatchSizeBuckets[b] += w.batch[b].Load()
		}
		for b := range w.flush {
			st.FlushBuckets[b] += w.flush[b].Load()
		}
		for b := range w.writeDelay {
			st.WriteDelayBuckets[b] += w.writeDelay[b].Load()
		}
		st.WriteDelaySeconds += time.Duration(w.writeDelayNanos.Load()).Seconds()
	}
	for _, ep := range s.endpoints {
		for i := range ep.registry {
			r := &ep.registry[i]
			r.RLock()
			st.BytesRead += r.gone.bytes
			st.FramesRead += r.gone.frames
			st.MessagesRead += r.gone.messages
			for _, c := range r.m {
				st.QueuedBytes += max(c.queued(), 0)
				st.BytesRead += c.bytesIn.Load()
				st.FramesRead += c.framesIn.Load()
				st.MessagesRead += c.msgsIn.Load()
			}
			r.RUnlock()
		}
	}
	return st
}
