package loadtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/internal/wsproto"
)

// ScenarioSiege holds a server's slots with hostile clients, to try its
// defences: Clients idle WebSocket clients (upgraded, answering pings,
// never saying anything) and IdleSockets TCP connections that never send
// their upgrade, from Sources, each dialed again as soon as the server
// drops it, for Duration. It measures only what the besiegers got; run a
// chat scenario from another address beside it to see what a healthy
// client gets (scripts/siege.sh).
const ScenarioSiege = "siege"

// maxSiegeSockets is what one siege process may hold: a process has at
// most 20,000 open files.
const maxSiegeSockets = 19500

// SiegeResult is what a siege's besiegers got.
type SiegeResult struct {
	Clients         int              `json:"clients"`          // idle WebSocket clients asked for
	IdleSockets     int              `json:"idle_sockets"`     // never-upgraded sockets asked for
	Sources         int              `json:"sources"`          // source addresses they came from
	Upgrades        int64            `json:"upgrades"`         // upgrades that succeeded
	ClientsHeld     int64            `json:"clients_held"`     // upgraded and open at the end
	ClientsPeak     int64            `json:"clients_peak"`     // most held at once
	ClosedByServer  map[string]int64 `json:"closed_by_server"` // upgraded clients the server ended, by close code
	Refused         map[string]int64 `json:"refused"`          // failed upgrades, by cause
	SocketsOpened   int64            `json:"sockets_opened"`   // never-upgraded sockets connected
	SocketsHeld     int64            `json:"sockets_held"`     // open at the end
	SocketsDropped  int64            `json:"sockets_dropped"`  // dropped by the server
	SocketsRefused  int64            `json:"sockets_refused"`  // connects that failed
	ReconnectPauses int64            `json:"reconnect_pauses"` // pauses of 50 ms after a refusal
}

type siege struct {
	cfg     Config
	target  *url.URL
	sources []net.IP

	upgrades, held, peak         atomic.Int64
	sockets, socketsHeld         atomic.Int64
	socketsDropped, socketsRefus atomic.Int64
	pauses                       atomic.Int64
	endHeld, endSockets          atomic.Int64 // sampled every 100 ms until the run's end
	mu                           sync.Mutex
	closed, refused              map[string]int64
}

// runSiege runs the siege scenario.
func runSiege(ctx context.Context, cfg Config) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.TimeLimit)
	defer cancel()
	target, _ := parseTarget(cfg.Targets[0]) // Validate checked it
	sources, _ := parseSources(cfg.Sources)
	s := &siege{cfg: cfg, target: target, sources: sources, closed: map[string]int64{}, refused: map[string]int64{}}
	res := &Result{Scenario: cfg.Scenario, Clients: cfg.Clients, Targets: cfg.Targets}
	began := time.Now()
	res.StartedAt = began.UTC().Format(time.RFC3339)
	runCtx, stop := context.WithTimeout(ctx, cfg.Duration)
	defer stop()
	var wg sync.WaitGroup
	// Each besieger is a goroutine: dial (paced by Dialers at the start),
	// hold, dial again when dropped, until the run ends.
	gate := make(chan struct{}, cfg.Dialers)
	for i := range cfg.Clients + cfg.IdleSockets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := s.sources[i%len(s.sources)]
			first := true
			for runCtx.Err() == nil {
				if first {
					select {
					case gate <- struct{}{}:
					case <-runCtx.Done():
						return
					}
				}
				var ok bool
				if i < cfg.Clients {
					ok = s.client(runCtx, src, first, gate)
				} else {
					ok = s.socket(runCtx, src, first, gate)
				}
				first = false
				if !ok {
					s.pauses.Add(1)
					select { // a refused besieger tries again soon, as an attacker would
					case <-time.After(50 * time.Millisecond):
					case <-runCtx.Done():
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s.endHeld.Store(s.held.Load())
			s.endSockets.Store(s.socketsHeld.Load())
			select {
			case <-t.C:
			case <-runCtx.Done():
				return
			}
		}
	}()
	wg.Wait()
	res.Seconds = time.Since(began).Seconds()
	res.Siege = s.result()
	res.Connected = int(res.Siege.Upgrades)
	res.Passed, res.Verdict = true, "passed (a siege measures what its besiegers got; its healthy clients run beside it)"
	return res, nil
}

// release lets the next first dial through the gate, once.
func release(first bool, gate chan struct{}) {
	if first {
		<-gate
	}
}

func (s *siege) dialer(src net.IP) *net.Dialer {
	return &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src}, KeepAlive: -1} // as Pool's
}

func (s *siege) count(m map[string]int64, k string) {
	s.mu.Lock()
	m[k]++
	s.mu.Unlock()
}

// client upgrades one idle client and holds it (answering pings) until the
// server ends it or ctx does; it reports whether it upgraded.
func (s *siege) client(ctx context.Context, src net.IP, first bool, gate chan struct{}) bool {
	c, err := s.dialer(src).DialContext(ctx, "tcp", s.target.Host)
	if err != nil {
		release(first, gate)
		if ctx.Err() == nil {
			s.count(s.refused, classify(err))
		}
		return false
	}
	defer c.Close()
	var kb [16]byte
	_, _ = rand.Read(kb[:])
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", s.target.RequestURI(), s.target.Host, base64.StdEncoding.EncodeToString(kb[:]))
	br := bufio.NewReaderSize(c, 4096)
	status, err := br.ReadString('\n')
	for err == nil {
		var line string
		if line, err = br.ReadString('\n'); line == "\r\n" {
			break
		}
	}
	release(first, gate)
	if err != nil {
		s.count(s.refused, "upgrade: "+classify(err))
		return false
	}
	if f := strings.Fields(status); len(f) < 2 || f[1] != "101" {
		code := "?"
		if len(f) >= 2 {
			code = f[1]
		}
		s.count(s.refused, "handshake status "+code)
		return false
	}
	_ = c.SetDeadline(time.Time{})
	s.upgrades.Add(1)
	if n := s.held.Add(1); n > s.peak.Load() {
		s.peak.Store(n) // approximate under races; a peak for the report
	}
	defer s.held.Add(-1)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	why := s.hold(c, br)
	if ctx.Err() == nil {
		s.count(s.closed, why)
	}
	return true
}

// hold reads the server's frames, answering pings, until it closes the
// connection; it returns how.
func (s *siege) hold(c net.Conn, br *bufio.Reader) string {
	var hb [wsproto.MaxHeaderLen]byte
	buf := make([]byte, 0, 256)
	for {
		if _, err := io.ReadFull(br, hb[:2]); err != nil {
			return "dropped without a close frame"
		}
		n := 2
		switch hb[1] & 0x7f {
		case 126:
			n += 2
		case 127:
			n += 8
		}
		if _, err := io.ReadFull(br, hb[2:n]); err != nil {
			return "dropped without a close frame"
		}
		h, _, err := wsproto.ParseHeader(hb[:n])
		if err != nil || h.Len > 1<<20 {
			return "bad frame"
		}
		buf = buf[:0]
		if cap(buf) < int(h.Len) {
			buf = make([]byte, 0, h.Len)
		}
		buf = buf[:h.Len]
		if _, err := io.ReadFull(br, buf); err != nil {
			return "dropped without a close frame"
		}
		switch h.Op {
		case wsproto.OpPing:
			_, _ = c.Write(wsproto.AppendMaskedFrame(nil, wsproto.OpPong, true, buf, [4]byte{1, 2, 3, 4}))
		case wsproto.OpClose:
			code, _, _ := wsproto.ParseClosePayload(buf)
			return fmt.Sprintf("closed by server with %d", code)
		}
	}
}

// socket opens one TCP connection that never sends its upgrade, and holds
// it until the server drops it or ctx ends; it reports whether it
// connected.
func (s *siege) socket(ctx context.Context, src net.IP, first bool, gate chan struct{}) bool {
	c, err := s.dialer(src).DialContext(ctx, "tcp", s.target.Host)
	release(first, gate)
	if err != nil {
		if ctx.Err() == nil {
			s.socketsRefus.Add(1)
		}
		return false
	}
	defer c.Close()
	s.sockets.Add(1)
	s.socketsHeld.Add(1)
	defer s.socketsHeld.Add(-1)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	_, _ = io.Copy(io.Discard, c) // until the server drops it
	if ctx.Err() == nil {
		s.socketsDropped.Add(1)
	}
	return true
}

func (s *siege) result() *SiegeResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &SiegeResult{Clients: s.cfg.Clients, IdleSockets: s.cfg.IdleSockets, Sources: len(s.sources),
		Upgrades: s.upgrades.Load(), ClientsHeld: s.endHeld.Load(), ClientsPeak: s.peak.Load(),
		ClosedByServer: s.closed, Refused: s.refused, SocketsOpened: s.sockets.Load(), SocketsHeld: s.endSockets.Load(),
		SocketsDropped: s.socketsDropped.Load(), SocketsRefused: s.socketsRefus.Load(), ReconnectPauses: s.pauses.Load()}
}
