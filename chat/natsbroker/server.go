package natsbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is an embedded NATS server with JetStream
// (github.com/nats-io/nats-server/v2), for one-machine clusters and tests:
// no install needed. Production clusters run their own NATS.
//
// It always requires authentication: a client must present its token, so
// nothing but Parley's nodes can read or write the cluster's bus.
type Server struct {
	ns    *server.Server
	dir   string // a temporary store to remove, or ""
	token string
}

// ServerConfig configures an embedded NATS server.
type ServerConfig struct {
	// Addr is host:port to listen on; port 0 picks a free one. Default
	// "127.0.0.1:4222".
	Addr string
	// StoreDir is JetStream's directory: where rooms' logs live with
	// Config.FileStorage (JetStream needs one even without). Default: a
	// temporary directory, removed by Shutdown.
	StoreDir string
	// InProcess starts the server without a listener: only brokers of this
	// process reach it (Config.Embedded). Addr is then ignored.
	InProcess bool
	// Token is the secret clients must present (at least 16 bytes).
	// Default: 32 random bytes, hex-encoded (Server.Token).
	Token string
	// Logger receives the server's warnings and errors. Default
	// slog.Default().
	Logger *slog.Logger

	// A NATS cluster: with ClusterAddr set, the server listens there for
	// routes from the other servers of the cluster, connects to those at
	// Routes (host:port of their ClusterAddr; the others are found from
	// them), and its JetStream is clustered: streams and buckets may have
	// replicas (Config.Replicas) on several servers and survive the loss of
	// one. Routes authenticate with Token too. Name names the server in the
	// cluster (unique; default "parley-embedded"). A clustered JetStream
	// needs a majority of its servers up to elect a leader: StartServer
	// does not wait for one (the others may not have started yet); use
	// WaitJetStream.
	Name        string
	ClusterAddr string
	Routes      []string

	// MonitorAddr, when set, is host:port of NATS's HTTP monitoring
	// (/healthz answers 200 once JetStream is ready, /jsz, /routez...).
	MonitorAddr string

	// MaxStore bounds the bytes JetStream keeps on disk (file storage),
	// and apart from those in memory (memory storage). Each room's stream
	// reserves its Config.LogBytes of it when it is made, so the server
	// holds at most MaxStore / LogBytes rooms' streams (a room past that
	// is refused, chat.ErrStoreFull) and the disk cannot fill. Default
	// DefaultMaxStore; -1 leaves nats-server's own limit (75% of the
	// free disk and of the memory).
	MaxStore int64
}

// DefaultMaxStore is ServerConfig.MaxStore's default: 16,384 rooms at the
// default Config.LogBytes.
const DefaultMaxStore = 4 << 30

// NewToken returns a random secret for an embedded server: 32 bytes,
// hex-encoded.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// StartServer starts an embedded NATS server and waits until it accepts
// connections.
// startTimeout bounds an embedded server's start. JetStream recovers its
// store first: a cluster's server restarted beside two busy loops took
// more than 10 s (TestLeaderDies).
const startTimeout = time.Minute

func StartServer(cfg ServerConfig) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:4222"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Token == "" {
		cfg.Token = NewToken()
	}
	if len(cfg.Token) < 16 {
		return nil, fmt.Errorf("natsbroker: embedded NATS token: %d bytes, want at least 16", len(cfg.Token))
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: embedded NATS address %q: %w", cfg.Addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("natsbroker: embedded NATS address %q: bad port", cfg.Addr)
	}
	if p == 0 || cfg.InProcess {
		p = server.RANDOM_PORT
	} else if l, err := net.Listen("tcp", cfg.Addr); err != nil {
		// nats-server only logs this and never starts: say it plainly.
		return nil, fmt.Errorf("natsbroker: embedded NATS on %s: %w", cfg.Addr, err)
	} else {
		_ = l.Close()
	}
	s := &Server{token: cfg.Token}
	store := cfg.StoreDir
	if store == "" {
		if store, err = os.MkdirTemp("", "parley-nats-"); err != nil {
			return nil, fmt.Errorf("natsbroker: embedded NATS store: %w", err)
		}
		s.dir = store
		defer func() {
			if s.ns == nil {
				_ = os.RemoveAll(store)
			}
		}()
	}
	if cfg.Name == "" {
		cfg.Name = "parley-embedded"
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       p,
		JetStream:  true,
		StoreDir:   store,
		NoSigs:     true,
		DontListen: cfg.InProcess,
		MaxPayload: 1 << 20,
		// Authentication is required (a token); NATS compares it in
		// constant time.
		Authorization: cfg.Token,
		// Stop (lame duck): the streams' leaders move to other servers
		// first, then the clients are let go over a short while.
		LameDuckDuration:    2 * time.Second,
		LameDuckGracePeriod: 500 * time.Millisecond,
	}
	switch {
	case cfg.MaxStore == 0:
		opts.JetStreamMaxStore, opts.JetStreamMaxMemory = DefaultMaxStore, DefaultMaxStore
	case cfg.MaxStore > 0:
		opts.JetStreamMaxStore, opts.JetStreamMaxMemory = cfg.MaxStore, cfg.MaxStore
	case cfg.MaxStore != -1:
		return nil, fmt.Errorf("natsbroker: embedded NATS MaxStore (%d): want a positive number of bytes, or -1 for nats-server's own limit", cfg.MaxStore)
	}
	if err := cfg.cluster(opts); err != nil {
		return nil, err
	}
	if cfg.MonitorAddr != "" {
		h, p, err := net.SplitHostPort(cfg.MonitorAddr)
		port, perr := strconv.Atoi(p)
		if err != nil || perr != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("natsbroker: embedded NATS monitoring address %q: want host:port", cfg.MonitorAddr)
		}
		opts.HTTPHost, opts.HTTPPort = h, port
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: embedded NATS: %w", err)
	}
	ns.SetLoggerV2(slogLogger{cfg.Logger.With("component", "nats")}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(startTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("natsbroker: embedded NATS on %s did not start within %v", cfg.Addr, startTimeout)
	}
	s.ns = ns
	return s, nil
}

// clusterUser is the user routes between embedded servers authenticate
// as (with the token as password).
const clusterUser = "parley-route"

// cluster sets opts's cluster options from cfg's.
func (cfg *ServerConfig) cluster(opts *server.Options) error {
	if cfg.ClusterAddr == "" {
		if len(cfg.Routes) > 0 {
			return fmt.Errorf("natsbroker: embedded NATS routes %q without a cluster address", cfg.Routes)
		}
		return nil
	}
	if cfg.InProcess {
		return fmt.Errorf("natsbroker: an embedded NATS in process cannot be clustered")
	}
	host, port, err := net.SplitHostPort(cfg.ClusterAddr)
	p, perr := strconv.Atoi(port)
	if err != nil || perr != nil || p < 0 || p > 65535 {
		return fmt.Errorf("natsbroker: embedded NATS cluster address %q: want host:port", cfg.ClusterAddr)
	}
	if p == 0 {
		p = server.RANDOM_PORT
	}
	opts.Cluster = server.ClusterOpts{Name: "parley", Host: host, Port: p, Username: clusterUser, Password: cfg.Token}
	for _, r := range cfg.Routes {
		if _, _, err := net.SplitHostPort(r); err != nil {
			return fmt.Errorf("natsbroker: embedded NATS route %q: want host:port", r)
		}
		opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats-route", User: url.UserPassword(clusterUser, cfg.Token), Host: r})
	}
	return nil
}

// ClusterAddr is host:port where the server takes routes from the other
// servers of its cluster ("" when not clustered).
func (s *Server) ClusterAddr() string {
	if a := s.ns.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// WaitJetStream waits until the server's JetStream can be used: at once
// for a lone server; in a cluster, once a JetStream leader is elected (a
// majority of the servers are up) and this server is current with it.
func (s *Server) WaitJetStream(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !s.ns.JetStreamIsCurrent() {
		if time.Now().After(deadline) {
			return fmt.Errorf("natsbroker: embedded NATS %s: no JetStream leader within %v (are a majority of the cluster's servers up?)", s.ns.Name(), timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// URL is the server's client URL.
// StoreUsage returns the bytes JetStream keeps, on disk and in memory,
// and those it has reserved for streams' limits.
func (s *Server) StoreUsage() (used, reserved int64, err error) {
	info, err := s.ns.Jsz(nil)
	if err != nil {
		return 0, 0, fmt.Errorf("natsbroker: JetStream usage: %w", err)
	}
	return int64(info.Store + info.Memory), int64(info.ReservedStore + info.ReservedMemory), nil
}

func (s *Server) URL() string { return s.ns.ClientURL() }

// Token is the secret a client presents (Config.Token).
func (s *Server) Token() string { return s.token }

// Stop stops the server gracefully, as a NATS server does on SIGTERM in
// lame duck mode: in a cluster, the streams and buckets it leads get new
// leaders first (a stop, unlike a crash, costs no leader election's
// wait), then its clients are let go over 2 s and it shuts down. It
// returns once the server is down; a temporary store is removed.
func (s *Server) Stop() {
	s.ns.LameDuckShutdown()
	s.Shutdown()
}

// Shutdown stops the server at once and removes a temporary store.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// slogLogger passes the server's warnings and errors to slog; its notices
// go at debug level.
type slogLogger struct{ l *slog.Logger }

func (l slogLogger) Noticef(format string, v ...any) { l.l.Debug(fmt.Sprintf(format, v...)) }
func (l slogLogger) Warnf(format string, v ...any)   { l.l.Warn(fmt.Sprintf(format, v...)) }
func (l slogLogger) Fatalf(format string, v ...any)  { l.l.Error(fmt.Sprintf(format, v...)) }
func (l slogLogger) Errorf(format string, v ...any)  { l.l.Error(fmt.Sprintf(format, v...)) }
func (l slogLogger) Debugf(format string, v ...any)  { l.l.Debug(fmt.Sprintf(format, v...)) }
func (l slogLogger) Tracef(format string, v ...any)  { l.l.Debug(fmt.Sprintf(format, v...)) }

// WaitJetStreamAt waits until JetStream answers at url (a comma-separated
// list of servers) for a client with token: a NATS cluster that has just
// started answers once a majority of its servers are up and have elected
// their leader.
func WaitJetStreamAt(url, token string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		last = jetStreamAnswers(url, token)
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("natsbroker: JetStream at %q did not answer within %v: %w", url, timeout, last)
}

func jetStreamAnswers(url, token string) error {
	nc, err := nats.Connect(url, nats.Token(token), nats.Timeout(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}
