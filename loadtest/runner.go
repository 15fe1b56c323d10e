package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
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

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/parleyhq/parley/internal/wsproto"
)

// runner is one run's state.
type runner struct {
	cfg     Config
	eng     *nbhttp.Engine
	targets []*url.URL
	sources []net.IP

	conns   []*conn // by client index; set once connected
	latency []time.Duration

	mu       sync.Mutex
	failures map[string]int // by cause
	closes   map[string]int // connections the server closed, by cause

	stats struct {
		connected      atomic.Int64
		failed         atomic.Int64
		open           atomic.Int64
		messages       atomic.Int64
		protocolErrors atomic.Int64
	}
	holding atomic.Bool
}

func (r *runner) count(c *atomic.Int64) { c.Add(1) }

func (r *runner) onMessage(_ *conn, _ []byte) { r.stats.messages.Add(1) }

func (r *runner) onClose(c *conn, err error) {
	r.stats.open.Add(-1)
	if !r.holding.Load() {
		return // the run's own teardown
	}
	cause := "dropped without a close frame"
	if code := c.closeCode.Load(); code != 0 {
		cause = "closed by server with " + strconv.Itoa(int(code))
	} else if err != nil {
		cause = "dropped: " + classify(err)
	}
	r.mu.Lock()
	r.closes[cause]++
	r.mu.Unlock()
}

func (r *runner) fail(cause string) {
	r.stats.failed.Add(1)
	r.mu.Lock()
	r.failures[cause]++
	r.mu.Unlock()
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

// Run executes a connect-and-hold run: it opens cfg.Clients connections,
// holds them for cfg.Hold, measures, and closes them. It returns the result,
// or an error if the run could not start.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, cfg.TimeLimit)
	defer cancel()
	r := &runner{
		cfg:      cfg,
		conns:    make([]*conn, cfg.Clients),
		latency:  make([]time.Duration, cfg.Clients),
		failures: make(map[string]int),
		closes:   make(map[string]int),
	}
	for _, t := range cfg.Targets {
		u, _ := parseTarget(t)
		hu := *u
		hu.Scheme = "http" // nbhttp's client speaks http(s) URLs; the upgrade makes it ws
		r.targets = append(r.targets, &hu)
	}
	r.sources, _ = parseSources(cfg.Sources)
	r.eng = nbhttp.NewEngine(nbhttp.Config{
		Name:              "parley-loadtest",
		NPoller:           runtime.GOMAXPROCS(0),
		SupportServerOnly: false,
		ReadLimit:         1 << 20,
	})
	r.eng.OnOpen(func(c net.Conn) {
		if nbc, ok := c.(*nbio.Conn); ok {
			_ = nbc.ExecuteLen() // happens-before for the race detector, as in engine
		}
	})
	if err := r.eng.Start(); err != nil {
		return nil, fmt.Errorf("loadtest: start nbio: %w", err)
	}
	defer r.eng.Stop()

	res := &Result{Scenario: "hold", Clients: cfg.Clients, Targets: cfg.Targets}
	began := time.Now()
	stopProgress := r.progress(began)
	r.dialAll(ctx)
	res.ConnectSeconds = time.Since(began).Seconds()
	res.Connected = int(r.stats.connected.Load())
	if res.ConnectSeconds > 0 {
		res.ConnectRate = float64(res.Connected) / res.ConnectSeconds
	}
	res.ConnectLatency = percentiles(r.latency)

	r.holding.Store(true)
	hold := time.NewTimer(cfg.Hold)
	select {
	case <-hold.C:
	case <-ctx.Done():
		hold.Stop()
	}
	// Measure while held.
	runtime.GC()
	res.ClientRSSBytes = rssOf("self")
	for _, pid := range cfg.ServerPIDs {
		res.ServerRSSBytes += rssOf(strconv.Itoa(pid))
	}
	res.OpenAtEnd = int(r.stats.open.Load())
	if res.OpenAtEnd > 0 {
		res.ClientRSSPerConn = float64(res.ClientRSSBytes) / float64(res.OpenAtEnd)
		if res.ServerRSSBytes > 0 {
			res.ServerRSSPerConn = float64(res.ServerRSSBytes) / float64(res.OpenAtEnd)
		}
	}
	r.holding.Store(false)
	stopProgress()

	r.mu.Lock()
	res.Failed = int(r.stats.failed.Load())
	res.Failures = maps(r.failures)
	res.ClosedByServer = maps(r.closes)
	r.mu.Unlock()
	res.MessagesReceived = r.stats.messages.Load()
	res.ProtocolErrors = r.stats.protocolErrors.Load()
	res.Seconds = time.Since(began).Seconds()

	for _, c := range r.conns {
		if c != nil {
			_ = c.nbc.Close()
		}
	}
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.HitTimeLimit = true
	}
	return res, nil
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// progress prints a line every second until stopped.
func (r *runner) progress(began time.Time) (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				fmt.Fprintf(r.cfg.Progress, "%6.1fs  connected %d/%d  open %d  failed %d  messages %d\n",
					time.Since(began).Seconds(), r.stats.connected.Load(), r.cfg.Clients,
					r.stats.open.Load(), r.stats.failed.Load(), r.stats.messages.Load())
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// dialAll opens every connection with a bounded pool of dialers.
func (r *runner) dialAll(ctx context.Context) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(r.cfg.Dialers, r.cfg.Clients) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r.dial(ctx, i)
			}
		}()
	}
	for i := range r.cfg.Clients {
		select {
		case next <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
}

// dial opens client i: a TCP connection bound to its source address, the
// upgrade through nbhttp's client, then the socket handed to a conn. It
// blocks until the upgrade is answered or fails.
func (r *runner) dial(ctx context.Context, i int) {
	target := r.targets[i%len(r.targets)]
	src := r.sources[i%len(r.sources)]
	d := &net.Dialer{
		LocalAddr: &net.TCPAddr{IP: src},
		Timeout:   r.cfg.ConnectTimeout,
		Control: func(_, _ string, rc syscall.RawConn) error {
			// IP_BIND_ADDRESS_NO_PORT: choose the port at connect time, per
			// destination, not at bind time, so each source address has its
			// whole port range for every target.
			var serr error
			_ = rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, 24, 1) })
			return serr
		},
	}
	cc := &nbhttp.ClientConn{Engine: r.eng, Timeout: r.cfg.ConnectTimeout, Dial: d.Dial}
	var kb [16]byte
	_, _ = rand.Read(kb[:])
	key := base64.StdEncoding.EncodeToString(kb[:])
	req := &http.Request{
		Method:     http.MethodGet,
		URL:        target,
		Host:       target.Host,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header: http.Header{
			"Upgrade":               {"websocket"},
			"Connection":            {"Upgrade"},
			"Sec-WebSocket-Key":     {key},
			"Sec-WebSocket-Version": {"13"},
		},
	}
	if r.cfg.Origin != "" {
		req.Header.Set("Origin", r.cfg.Origin)
	}
	result := make(chan string, 1) // "" on success, else the failure's cause
	start := time.Now()
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
		nbc, ok := nc.(*nbio.Conn)
		var parser *nbhttp.Parser
		if ok {
			parser, ok = nbc.Session().(*nbhttp.Parser)
		}
		if !ok {
			result <- fmt.Sprintf("unexpected connection type %T", nc)
			return
		}
		c := &conn{idx: i, r: r, nbc: nbc}
		parser.ParserCloser = c // bytes after the 101 in this read go to c
		nbc.SetSession(c)
		r.stats.open.Add(1)
		r.conns[i] = c
		result <- ""
	})
	select {
	case cause := <-result:
		if cause != "" {
			r.fail(cause)
			cc.Close()
			return
		}
		r.latency[i] = time.Since(start)
		r.stats.connected.Add(1)
	case <-ctx.Done():
		r.fail("run time limit")
		cc.Close()
	}
}

// rssOf reads VmRSS of /proc/<pid>/status, in bytes (0 if unreadable).
func rssOf(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// percentiles summarizes durations (zeros, from failed dials, excluded).
func percentiles(ds []time.Duration) Latency {
	var v []time.Duration
	for _, d := range ds {
		if d > 0 {
			v = append(v, d)
		}
	}
	if len(v) == 0 {
		return Latency{}
	}
	slices.Sort(v)
	at := func(q float64) float64 {
		return float64(v[min(len(v)-1, int(q*float64(len(v))))].Microseconds()) / 1000
	}
	return Latency{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: at(1)}
}
