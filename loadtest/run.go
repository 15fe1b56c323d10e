package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scenarios.
const (
	ScenarioHold  = "hold"  // connect, hold, measure memory
	ScenarioBurst = "burst" // connect, then rounds of Burst messages from one client to everyone
)

// run is one run's state and its Handler.
type run struct {
	cfg  Config
	pool *Pool

	holding atomic.Bool
	mu      sync.Mutex
	lost    map[string]int // connections the server closed while held, by cause

	messages atomic.Int64
	latency  Histogram

	// Burst bookkeeping. Each client's slots are touched only by its poller.
	round    []int32
	next     []int32
	received atomic.Int64 // in this round, in order or past a gap
	dups     atomic.Int64
	reorder  atomic.Int64
	lastRecv atomic.Int64 // unix ns of the latest delivery
}

func (r *run) OnMessage(client int, data []byte) {
	r.messages.Add(1)
	if r.round == nil {
		return
	}
	now := time.Now().UnixNano()
	rd, seq, ts, ok := parseProbe(data)
	if !ok {
		return
	}
	r.latency.Record(time.Duration(now - ts))
	for {
		m := r.lastRecv.Load()
		if now <= m || r.lastRecv.CompareAndSwap(m, now) {
			break
		}
	}
	if rd != r.round[client] {
		r.round[client], r.next[client] = rd, 0
	}
	switch n := r.next[client]; {
	case seq == n:
		r.next[client]++
		r.received.Add(1)
	case seq < n:
		r.dups.Add(1)
	default:
		r.reorder.Add(1) // a gap: what was skipped is counted missing at the round's end
		r.next[client] = seq + 1
		r.received.Add(1)
	}
}

func (r *run) OnClose(client int, code int, err error) {
	if !r.holding.Load() {
		return // the run's own teardown
	}
	cause := "dropped without a close frame"
	if code != 0 {
		cause = "closed by server with " + strconv.Itoa(code)
	} else if err != nil {
		cause = "dropped: " + classify(err)
	}
	r.mu.Lock()
	r.lost[cause]++
	r.mu.Unlock()
}

// probe payloads are "<round> <seq> <unix ns>". Servers may wrap them: a
// Parley chat message event carries the probe as its "text"; other servers
// may prefix it ("<ip>: <text>"), so the last ": " is skipped.
func appendProbe(b []byte, round, seq int32, ts int64) []byte {
	b = strconv.AppendInt(b, int64(round), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, ' ')
	return strconv.AppendInt(b, ts, 10)
}

func parseProbe(b []byte) (round, seq int32, ts int64, ok bool) {
	if len(b) > 0 && b[0] == '{' {
		// {"type":"message",...,"text":"<probe>",...}: the probe needs no
		// escaping, so it is the bytes up to the next quote.
		i := bytes.Index(b, []byte(`"text":"`))
		if i < 0 || !bytes.HasPrefix(b, []byte(`{"type":"message"`)) {
			return 0, 0, 0, false
		}
		b = b[i+len(`"text":"`):]
		if j := bytes.IndexByte(b, '"'); j >= 0 {
			b = b[:j]
		}
	} else if i := bytes.LastIndex(b, []byte(": ")); i >= 0 {
		b = b[i+2:]
	}
	var f [3]int64
	k := 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9' && k < 3:
			f[k] = f[k]*10 + int64(c-'0')
		case c == ' ' && k < 2:
			k++
		default:
			return 0, 0, 0, false
		}
	}
	return int32(f[0]), int32(f[1]), f[2], k == 2
}

// Run executes one load-test run and returns what it measured. It fails
// only if the run cannot start; connection failures are part of the result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, cfg.TimeLimit)
	defer cancel()
	r := &run{cfg: cfg, lost: make(map[string]int)}
	if cfg.Scenario == ScenarioBurst {
		r.round = make([]int32, cfg.Clients)
		r.next = make([]int32, cfg.Clients)
		for i := range r.round {
			r.round[i] = -1
		}
	}
	pool, err := NewPool(cfg, r)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	r.pool = pool

	res := &Result{Scenario: cfg.Scenario, Clients: cfg.Clients, Targets: cfg.Targets}
	began := time.Now()
	stopProgress := r.progress(began)
	defer stopProgress()
	pool.DialAll(ctx)
	res.ConnectSeconds = time.Since(began).Seconds()
	res.Connected = pool.Connected()
	if res.ConnectSeconds > 0 {
		res.ConnectRate = float64(res.Connected) / res.ConnectSeconds
	}
	res.ConnectLatency = pool.ConnectLatency().Latency()
	r.holding.Store(true)

	switch cfg.Scenario {
	case ScenarioHold:
		hold := time.NewTimer(cfg.Hold)
		select {
		case <-hold.C:
		case <-ctx.Done():
			hold.Stop()
		}
	case ScenarioBurst:
		r.bursts(ctx, res)
	}

	runtime.GC()
	res.ClientRSSBytes = rssOf("self")
	for _, pid := range cfg.ServerPIDs {
		res.ServerRSSBytes += rssOf(strconv.Itoa(pid))
	}
	res.OpenAtEnd = pool.Open()
	if res.OpenAtEnd > 0 {
		res.ClientRSSPerConn = float64(res.ClientRSSBytes) / float64(res.OpenAtEnd)
		res.ServerRSSPerConn = float64(res.ServerRSSBytes) / float64(res.OpenAtEnd)
	}
	r.holding.Store(false)

	res.Failed = pool.Failed()
	res.Failures = pool.Failures()
	r.mu.Lock()
	res.ClosedByServer = r.lost
	r.mu.Unlock()
	res.MessagesReceived = r.messages.Load()
	res.ProtocolErrors = pool.ProtocolErrors()
	res.Seconds = time.Since(began).Seconds()
	res.HitTimeLimit = ctx.Err() != nil
	return res, nil
}

// bursts runs cfg.Rounds rounds: client 0 sends cfg.Burst probes as fast as
// it can, then the round waits until every connected client has every
// probe, or RoundTimeout.
func (r *run) bursts(ctx context.Context, res *Result) {
	cfg := r.cfg
	var buf []byte
	var totalDeliveries int64
	var totalSeconds float64
	for rd := range int32(cfg.Rounds) {
		if ctx.Err() != nil {
			break
		}
		recipients := int64(r.pool.Open())
		expected := recipients * int64(cfg.Burst)
		r.received.Store(0)
		first := time.Now()
		for seq := range int32(cfg.Burst) {
			buf = appendProbe(buf[:0], rd, seq, time.Now().UnixNano())
			if err := r.pool.Send(0, buf); err != nil {
				cfg.Logger.Error("sender failed", "err", err)
				return
			}
		}
		res.MessagesSent += int64(cfg.Burst)
		deadline := time.Now().Add(cfg.RoundTimeout)
		for r.received.Load() < expected && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(2 * time.Millisecond)
		}
		got := r.received.Load()
		secs := float64(r.lastRecv.Load()-first.UnixNano()) / 1e9
		rr := Round{Recipients: recipients, Deliveries: got, Missing: expected - got, Seconds: secs}
		if secs > 0 {
			rr.DeliveriesPerSec = float64(got) / secs
		}
		res.Rounds = append(res.Rounds, rr)
		res.Expected += expected
		res.Delivered += got
		totalDeliveries += got
		totalSeconds += secs
	}
	res.Missing = res.Expected - res.Delivered
	res.Duplicated = r.dups.Load()
	res.OutOfOrder = r.reorder.Load()
	if totalSeconds > 0 {
		res.DeliveriesPerSec = float64(totalDeliveries) / totalSeconds
	}
	res.EndToEnd = r.latency.Latency()
}

// progress prints a line every second until stopped.
func (r *run) progress(began time.Time) (stop func()) {
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
		var last int64
		for {
			select {
			case <-t.C:
				m := r.messages.Load()
				fmt.Fprintf(r.cfg.Progress, "%6.1fs  connected %d/%d  open %d  failed %d  msgs/s %d  p99 %.1fms\n",
					time.Since(began).Seconds(), r.pool.Connected(), r.cfg.Clients, r.pool.Open(),
					r.pool.Failed(), m-last, float64(r.latency.Quantile(0.99).Microseconds())/1000)
				last = m
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
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
