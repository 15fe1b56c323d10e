package natsbroker

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
}

// NewToken returns a random secret for an embedded server: 32 bytes,
// hex-encoded.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// StartServer starts an embedded NATS server and waits until it accepts
// connections.
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
	ns, err := server.NewServer(&server.Options{
		ServerName: "parley-embedded",
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
	})
	if err != nil {
		return nil, fmt.Errorf("natsbroker: embedded NATS: %w", err)
	}
	ns.SetLoggerV2(slogLogger{cfg.Logger.With("component", "nats")}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("natsbroker: embedded NATS on %s did not start within 10 s", cfg.Addr)
	}
	s.ns = ns
	return s, nil
}

// URL is the server's client URL.
func (s *Server) URL() string { return s.ns.ClientURL() }

// Token is the secret a client presents (Config.Token).
func (s *Server) Token() string { return s.token }

// Shutdown stops the server and removes a temporary store.
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
