package loadtest

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	ltls "github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/parleyhq/parley/internal/wsproto"
)

// Handler receives what the pool's clients get. Its methods run on nbio
// poller goroutines, concurrently for different clients and in order for
// one client; they must not block. data is valid only during the call.
type Handler interface {
	OnMessage(client int, data []byte)
	// OnClose reports a client's socket closed: code is the server's close
	// code, 0 if none arrived; err is what nbio reported.
	OnClose(client int, code int, err error)
}

// Pool is a set of WebSocket clients on one nbio client engine: no
// goroutine per client, a few hundred bytes each once connected. Build one
// with NewPool, open its clients with DialAll, stop it with Close.
type Pool struct {
	cfg     Config
	h       Handler
	eng     *nbhttp.Engine
	targets []*url.URL
	sources []net.IP

	conns   []*conn // by client index; set once connected
	shift   []uint8 // by client index: how many targets on its reconnections have moved it
	latency Histogram
	tls     *ltls.Config // for wss:// targets
	tokens  []string     // by client index: its connect token (TokenSecretFile); nil: none

	mu       sync.Mutex
	failures map[string]int // dial failures by cause; mu also guards conns
	retries  map[string]int // failed reconnection attempts by cause

	connected atomic.Int64
	failed    atomic.Int64
	open      atomic.Int64
	protoErrs atomic.Int64

	wireIn       atomic.Int64 // bytes read after the upgrades
	deflateConns atomic.Int64 // clients that negotiated permessage-deflate
	compressedIn atomic.Int64 // compressed messages received
}

// NewPool validates cfg and starts a client engine for cfg.Clients clients.
func NewPool(cfg Config, h Handler) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	p := &Pool{cfg: cfg, h: h, conns: make([]*conn, cfg.Clients), failures: make(map[string]int),
		retries: make(map[string]int)}
	if cfg.Reconnect {
		p.shift = make([]uint8, cfg.Clients)
	}
	for _, t := range cfg.Targets {
		u, _ := parseTarget(t)
		hu := *u
		hu.Scheme = "http" // nbhttp's client speaks http(s) URLs; the upgrade makes it ws(s)
		if u.Scheme == "wss" {
			hu.Scheme = "https"
		}
		p.targets = append(p.targets, &hu)
	}
	p.sources, _ = parseSources(cfg.Sources)
	tlsCfg, err := clientTLS(cfg)
	if err != nil {
		return nil, err
	}
	p.tls = tlsCfg
	if cfg.TokenSecretFile != "" {
		b, err := os.ReadFile(cfg.TokenSecretFile)
		if err != nil {
			return nil, fmt.Errorf("loadtest: TokenSecretFile: %w", err)
		}
		secret := []byte(strings.TrimRight(string(b), "\r\n"))
		if len(secret) < 32 {
			return nil, fmt.Errorf("loadtest: TokenSecretFile %s: %d bytes, want at least 32", cfg.TokenSecretFile, len(secret))
		}
		// Signed before dialing, as a client gets its token from its
		// backend before it connects: the run measures the server.
		p.tokens = make([]string, cfg.Clients)
		for i := range p.tokens {
			if p.tokens[i], err = p.token(secret, i); err != nil {
				return nil, fmt.Errorf("loadtest: signing a token: %w", err)
			}
		}
	}
	p.eng = nbhttp.NewEngine(nbhttp.Config{
		Name:      "parley-loadtest",
		NPoller:   runtime.GOMAXPROCS(0),
		ReadLimit: 1 << 20,
	})
	p.eng.OnOpen(func(c net.Conn) {
		if nbc, ok := c.(*nbio.Conn); ok {
			_ = nbc.ExecuteLen() // a happens-before edge for the race detector, as in engine
		}
	})
	if err := p.eng.Start(); err != nil {
		return nil, fmt.Errorf("loadtest: start nbio: %w", err)
	}
	return p, nil
}

// Close drops every client and stops the engine.
func (p *Pool) Close() {
	p.mu.Lock()
	conns := slices.Clone(p.conns)
	p.mu.Unlock()
	for _, c := range conns {
		if c != nil {
			_ = c.nbc.Close()
		}
	}
	p.eng.Stop()
}

// Connected returns the number of clients that completed their upgrade.
func (p *Pool) Connected() int { return int(p.connected.Load()) }

// Open returns the number of clients whose socket is open.
func (p *Pool) Open() int { return int(p.open.Load()) }

// Failed returns the number of clients that could not connect.
func (p *Pool) Failed() int { return int(p.failed.Load()) }

// Failures returns dial failures by cause.
func (p *Pool) Failures() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.failures))
	for k, v := range p.failures {
		out[k] = v
	}
	return out
}

// ReconnectRetries returns the failed reconnection attempts by cause.
func (p *Pool) ReconnectRetries() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.retries)
}

// ConnectLatency returns the histogram of connect-plus-upgrade times.
func (p *Pool) ConnectLatency() *Histogram { return &p.latency }

// ProtocolErrors returns how many clients saw a frame break RFC 6455.
func (p *Pool) ProtocolErrors() int64 { return p.protoErrs.Load() }

// Send writes a text message from client i. It fails if i is not connected.
func (p *Pool) Send(i int, data []byte) error {
	c := p.conn(i)
	if c == nil {
		return fmt.Errorf("loadtest: client %d is not connected", i)
	}
	var stack [512]byte
	b := wsproto.AppendMaskedFrame(stack[:0], wsproto.OpText, true, data, [4]byte{0x5a, 0x17, byte(i), byte(i >> 8)})
	_, err := c.w.Write(b)
	return err
}

// clientTLS builds the TLS configuration for wss:// targets.
func clientTLS(cfg Config) (*ltls.Config, error) {
	tc := &ltls.Config{InsecureSkipVerify: cfg.TLSInsecure, MinVersion: ltls.VersionTLS12}
	if cfg.TLSCAFile != "" {
		pem, err := os.ReadFile(cfg.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("loadtest: TLSCAFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("loadtest: TLSCAFile %q holds no PEM certificate", cfg.TLSCAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func (p *Pool) conn(i int) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[i]
}

// Drop closes client i's socket without a close frame (a vanishing client).
func (p *Pool) Drop(i int) {
	if c := p.conn(i); c != nil {
		_ = c.nbc.Close()
	}
}

// Redial opens client i again (after Drop); it blocks until the upgrade is
// answered or fails, which is counted like any dial.
func (p *Pool) Redial(ctx context.Context, i int) bool {
	p.mu.Lock()
	p.conns[i] = nil
	p.mu.Unlock()
	return p.dial(ctx, i)
}

// Reconnect opens client i again after the server closed or dropped it,
// on another target (see target), then the others in turn, with a short
// pause after each round of them, until ctx ends. Failed attempts
// are not counted as failed connections; it returns the last failure's
// cause, "" on success. Config.Reconnect must be set.
func (p *Pool) Reconnect(ctx context.Context, i int) string {
	p.mu.Lock()
	p.conns[i] = nil
	p.mu.Unlock()
	cause := "run ended"
	for attempt := 0; ctx.Err() == nil; attempt++ {
		p.mu.Lock()
		p.shift[i]++
		p.mu.Unlock()
		if cause = p.dialOnce(ctx, i); cause == "" {
			return ""
		}
		p.mu.Lock()
		p.retries[cause]++
		p.mu.Unlock()
		if attempt%len(p.targets) == len(p.targets)-1 {
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
	return cause
}

// DialAll opens every client with a bounded pool of dialers and returns
// when each has connected or failed, or ctx ends.
func (p *Pool) DialAll(ctx context.Context) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(p.cfg.Dialers, p.cfg.Clients) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				p.dial(ctx, i)
			}
		}()
	}
	began := time.Now()
feed:
	for i := range p.cfg.Clients {
		if r := p.cfg.Ramp; r > 0 {
			// Client i may start once i/r seconds have passed.
			if wait := time.Until(began.Add(time.Duration(float64(i) / r * float64(time.Second)))); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					break feed
				}
			}
		}
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
}

func (p *Pool) fail(cause string) {
	p.failed.Add(1)
	p.mu.Lock()
	p.failures[cause]++
	p.mu.Unlock()
}

// classify names an error's cause for the report.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no source port available"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, nbhttp.ErrClientTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}

// dial opens client i: a TCP connection bound to its source address, the
// upgrade through nbhttp's client, then the socket handed to a conn. It
// blocks until the upgrade is answered or fails.
func (p *Pool) dial(ctx context.Context, i int) bool {
	start := time.Now()
	if cause := p.dialOnce(ctx, i); cause != "" {
		p.fail(cause)
		return false
	}
	p.latency.Record(time.Since(start))
	p.connected.Add(1)
	return true
}

// target returns the index of client i's target: i mod n at first; after
// a reconnections, one of the others, spread so that the clients of a
// target that went away share the rest evenly.
func (p *Pool) target(i int) int {
	n := len(p.targets)
	if p.shift == nil || n == 1 {
		return i % n
	}
	p.mu.Lock()
	a := int(p.shift[i])
	p.mu.Unlock()
	if a == 0 {
		return i % n
	}
	return (i%n + 1 + (i/n+a-1)%(n-1)) % n
}

// token signs client i's connect token: user "lt-<n>", n its index in the
// run.
func (p *Pool) token(secret []byte, i int) (string, error) {
	now := time.Now()
	ttl := p.cfg.TokenTTL
	if ttl <= 0 {
		ttl = p.cfg.TimeLimit
	}
	c := jwt.RegisteredClaims{Subject: "lt-" + strconv.Itoa(p.cfg.Offset+i), IssuedAt: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl))}
	if p.cfg.TokenAudience != "" {
		c.Audience = jwt.ClaimStrings{p.cfg.TokenAudience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// dialOnce opens client i and returns "" or why it could not.
func (p *Pool) dialOnce(ctx context.Context, i int) string {
	target := p.targets[p.target(i)]
	src := p.sources[i%len(p.sources)]
	d := &net.Dialer{
		LocalAddr: &net.TCPAddr{IP: src},
		Timeout:   p.cfg.ConnectTimeout,
		// No TCP keepalives: a run is bounded and the server's heartbeats
		// are answered; they cost four setsockopt calls per connection.
		KeepAlive: -1,
		Control: func(_, _ string, rc syscall.RawConn) error {
			// IP_BIND_ADDRESS_NO_PORT: choose the port at connect time, per
			// destination, not at bind time, so each source address has its
			// whole port range for every target.
			var serr error
			_ = rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, 24, 1) })
			return serr
		},
	}
	cc := &nbhttp.ClientConn{Engine: p.eng, Timeout: p.cfg.ConnectTimeout, Dial: d.Dial, TLSClientConfig: p.tls}
	var kb [16]byte
	_, _ = rand.Read(kb[:])
	key := base64.StdEncoding.EncodeToString(kb[:])
	req := &http.Request{
		Method: http.MethodGet, URL: target, Host: target.Host,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{
			"Upgrade":               {"websocket"},
			"Connection":            {"Upgrade"},
			"Sec-WebSocket-Key":     {key},
			"Sec-WebSocket-Version": {"13"},
		},
	}
	if p.cfg.Origin != "" {
		req.Header.Set("Origin", p.cfg.Origin)
	}
	if p.tokens != nil {
		req.Header.Set("Authorization", "Bearer "+p.tokens[i])
	}
	if p.cfg.Compression {
		req.Header.Set("Sec-WebSocket-Extensions", "permessage-deflate; client_no_context_takeover")
	}
	result := make(chan string, 1) // "" on success, else the failure's cause
	cc.Do(req, func(resp *http.Response, nc net.Conn, err error) {
		// On the poller: no blocking here.
		if err != nil {
			result <- classify(err)
			return
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			result <- "handshake status " + strconv.Itoa(resp.StatusCode)
			return
		}
		if resp.Header.Get("Sec-WebSocket-Accept") != wsproto.AcceptKey(key) {
			result <- "handshake with a bad Sec-WebSocket-Accept"
			return
		}
		var nbc *nbio.Conn
		var hc *nbhttp.Conn
		var w io.Writer
		switch v := nc.(type) {
		case *nbio.Conn:
			nbc, w = v, v
		case *nbhttp.Conn: // wss: writes go through TLS
			if tc, ok := v.Conn.(*ltls.Conn); ok {
				nbc, _ = tc.Conn().(*nbio.Conn)
				hc, w = v, tc
			}
		}
		var parser *nbhttp.Parser
		ok := nbc != nil
		if ok {
			parser, ok = nbc.Session().(*nbhttp.Parser)
		}
		if !ok {
			result <- fmt.Sprintf("unexpected connection type %T", nc)
			return
		}
		c := &conn{idx: i, p: p, nbc: nbc, hc: hc, w: w}
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); p.cfg.Compression && strings.HasPrefix(ext, "permessage-deflate") {
			c.deflate = true
			p.deflateConns.Add(1)
		}
		parser.ParserCloser = c // bytes after the 101 in this read go to c
		nbc.SetSession(c)
		p.open.Add(1)
		p.mu.Lock()
		p.conns[i] = c
		p.mu.Unlock()
		result <- ""
	})
	select {
	case cause := <-result:
		if cause != "" {
			cc.Close()
		}
		return cause
	case <-ctx.Done():
		cc.Close()
		return "run time limit"
	}
}
