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
	"syscall"
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
	window   atomic.Pointer[Histogram] // this second's latencies, for the series
	lastRecv atomic.Int64              // unix ns of the latest delivery

	// Burst bookkeeping. Each client's slots are touched only by its poller.
	round    []int32
	next     []int32
	received atomic.Int64   // in this round, in order or past a gap
	byRound  []atomic.Int64 // the same by round, counted whenever they come (late ones too)
	dups     atomic.Int64
	reorder  atomic.Int64

	chat *chatState // chat and churn scenarios
}

// delivered records a probe's end-to-end latency (ts: its send time).
func (r *run) delivered(ts int64) {
	now := time.Now().UnixNano()
	d := time.Duration(now - ts)
	r.latency.Record(d)
	r.window.Load().Record(d)
	for {
		m := r.lastRecv.Load()
		if now <= m || r.lastRecv.CompareAndSwap(m, now) {
			return
		}
	}
}

func (r *run) OnMessage(client int, data []byte) {
	r.messages.Add(1)
	switch {
	case r.chat != nil:
		r.chat.onMessage(client, data, r)
	case r.round != nil:
		r.onProbe(client, data)
	}
}

func (r *run) onProbe(client int, data []byte) {
	rd, seq, ts, ok := parseProbe(data)
	if !ok {
		return
	}
	r.delivered(ts)
	counted := false
	defer func() {
		if counted && int(rd) < len(r.byRound) {
			r.byRound[rd].Add(1)
		}
	}()
	if rd != r.round[client] {
		r.round[client], r.next[client] = rd, 0
	}
	switch n := r.next[client]; {
	case seq == n:
		r.next[client]++
		r.received.Add(1)
		counted = true
	case seq < n:
		r.dups.Add(1)
	default:
		r.reorder.Add(1) // a gap: what was skipped is counted missing at the round's end
		r.next[client] = seq + 1
		r.received.Add(1)
		counted = true
	}
}

func (r *run) OnClose(client int, code int, err error) {
	if !r.holding.Load() || (r.chat != nil && r.chat.churner[client]) {
		return // the run's own teardown, or a churn client it dropped
	}
	if r.chat != nil && r.chat.reconnect != nil {
		r.chat.resuming[client].Store(true) // its sender waits until it is back in its room
		r.chat.away.Add(1)
		r.chat.reconnect <- closed{client, time.Now()} // lost only if it cannot come back
		return
	}
	cause := "dropped without a close frame"
	if code != 0 {
		cause = "closed by server with " + strconv.Itoa(code)
	} else if err != nil {
		cause = "dropped: " + classify(err)
	}
	r.lose(cause)
}

// lose counts a client the server closed for good.
func (r *run) lose(cause string) {
	r.mu.Lock()
	r.lost[cause]++
	r.mu.Unlock()
}

// probe payloads are "<a> <b> <unix ns>": round and seq in the burst
// scenario, sender and seq in the chat. Servers may wrap them: a Parley chat
// message event carries the probe as its "text"; other servers may prefix
// it ("<ip>: <text>"), so the last ": " is skipped.
func appendProbe(b []byte, a, seq int32, ts int64) []byte {
	b = strconv.AppendInt(b, int64(a), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, ' ')
	return strconv.AppendInt(b, ts, 10)
}

func parseProbe(b []byte) (a, seq int32, ts int64, ok bool) {
	if len(b) > 0 && b[0] == '{' {
		// {"type":"message",...,"text":"<probe>",...}: the probe needs no
		// escaping, so it is the bytes up to the next quote.
		i := bytes.Index(b, []byte(`"text":"`))
		if i < 0 || !bytes.HasPrefix(b, messagePrefix) {
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
// only if the run cannot start; connection failures and lost messages are
// part of the result. A run of more than PerWorker clients (or with Workers
// set) runs as that many worker processes, coordinated and merged here.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d := cfg.withDefaults(); d.Scenario == ScenarioSiege {
		return runSiege(ctx, d)
	} else if workers(d) > 1 {
		return runWorkers(ctx, d)
	}
	return runWith(ctx, cfg, nil)
}

// runWith is Run; phase, if set, is called between phases (workers use it
// to wait for the coordinator) with "connected" and "done".
func runWith(ctx context.Context, cfg Config, phase func(string) error) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, cfg.TimeLimit)
	defer cancel()
	r := &run{cfg: cfg, lost: make(map[string]int)}
	r.window.Store(new(Histogram))
	switch cfg.Scenario {
	case ScenarioBurst:
		r.round = make([]int32, cfg.Clients)
		r.next = make([]int32, cfg.Clients)
		r.byRound = make([]atomic.Int64, cfg.Rounds)
		for i := range r.round {
			r.round[i] = -1
		}
	case ScenarioChat, ScenarioChurn, ScenarioFlood:
		r.chat = newChatState(cfg)
	}
	pool, err := NewPool(cfg, r)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	r.pool = pool

	res := &Result{Scenario: cfg.Scenario, Clients: cfg.Clients, Targets: cfg.Targets}
	before := scrapeServers(cfg.MetricsURLs)
	cpu0 := ownCPU()
	began := time.Now()
	res.StartedAt = began.UTC().Format(time.RFC3339)
	stopSampling := r.sample(began, res)
	defer stopSampling()
	pool.DialAll(ctx)
	res.ConnectSeconds = time.Since(began).Seconds()
	res.Connected = pool.Connected()
	if res.ConnectSeconds > 0 {
		res.ConnectRate = float64(res.Connected) / res.ConnectSeconds
	}
	res.ConnectLatency = pool.ConnectLatency().Latency()
	r.holding.Store(true)
	if phase != nil {
		if err := phase("connected"); err != nil {
			return nil, err
		}
	}

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
	case ScenarioChat, ScenarioChurn, ScenarioFlood:
		r.chatPhase(ctx, res)
	}

	runtime.GC()
	res.ClientRSSBytes = rssOf("self")
	res.measureServers(cfg, before)
	res.ClientCPUSeconds = (ownCPU() - cpu0).Seconds()
	res.OpenAtEnd = pool.Open()
	if res.OpenAtEnd > 0 {
		res.ClientRSSPerConn = float64(res.ClientRSSBytes) / float64(res.OpenAtEnd)
		res.ServerRSSPerConn = float64(res.ServerRSSBytes) / float64(res.OpenAtEnd)
	}
	r.holding.Store(false)
	if phase != nil {
		if err := phase("done"); err != nil {
			return nil, err
		}
	}
	stopSampling()

	res.Failed = pool.Failed()
	res.Failures = pool.Failures()
	r.mu.Lock()
	res.ClosedByServer = r.lost
	r.mu.Unlock()
	res.MessagesReceived = r.messages.Load()
	res.ProtocolErrors = pool.ProtocolErrors()
	res.WireBytesIn, res.DeflateClients, res.CompressedIn = pool.wireIn.Load(), pool.deflateConns.Load(), pool.compressedIn.Load()
	if res.MessagesReceived > 0 {
		res.WireBytesPerMsg = float64(res.WireBytesIn) / float64(res.MessagesReceived)
	}
	res.Seconds = time.Since(began).Seconds()
	res.HitTimeLimit = ctx.Err() != nil
	res.latency = &r.latency
	res.connect = pool.ConnectLatency()
	res.EndToEnd = r.latency.Latency()
	res.evaluate(cfg)
	return res, nil
}

// chatPhase joins every chatter to its room, chats (and churns) for
// Duration, then waits for the last deliveries.
func (r *run) chatPhase(ctx context.Context, res *Result) {
	cs := r.chat
	res.RoomSize = r.cfg.RoomSize
	res.Joined, res.JoinsAsked = cs.joinAll(ctx, r.pool)
	if a := cs.refusal.Load(); a != nil {
		res.JoinRefusal = *a
	}
	sendCtx, stop := context.WithTimeout(ctx, r.cfg.Duration)
	defer stop()
	churnLatency := new(Histogram)
	var wg sync.WaitGroup
	wg.Add(2)
	sendStart := time.Now()
	go func() { defer wg.Done(); cs.send(sendCtx, r.pool) }()
	go func() { defer wg.Done(); cs.churn(sendCtx, ctx, r.pool, churnLatency) }()
	var fl *floodStats
	if r.cfg.Scenario == ScenarioFlood {
		target, _ := parseTarget(r.cfg.Targets[0]) // Validate checked it
		fl = &floodStats{cfg: r.cfg, target: target}
		wg.Add(2)
		go func() { defer wg.Done(); fl.flood(sendCtx) }()
		go func() { defer wg.Done(); fl.samplePeak(sendCtx) }()
	}
	resumeCtx, stopResuming := context.WithCancel(ctx)
	resumed := make(chan struct{})
	if cs.reconnect != nil {
		go func() { defer close(resumed); cs.resume(resumeCtx, r.pool, r) }()
	} else {
		close(resumed)
	}
	defer func() { stopResuming(); <-resumed }()
	wg.Wait()
	// Clients still reconnecting get up to half a minute more to come back.
	for until := time.Now().Add(30 * time.Second); cs.away.Load() > 0 && time.Now().Before(until) && ctx.Err() == nil; {
		time.Sleep(10 * time.Millisecond)
	}
	sendSeconds := time.Since(sendStart).Seconds()
	sent, expected := cs.expected()
	// Drain: wait until everything arrived, or nothing more arrives for a
	// second, bounded by 30 s.
	deadline := time.Now().Add(30 * time.Second)
	last, lastChange := int64(-1), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		got := cs.received.Load()
		if got >= expected {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		} else if time.Since(lastChange) > time.Second {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fl != nil {
		res.Flood = fl.result()
	}
	res.MessagesSent = sent
	res.Expected = expected
	res.Delivered = cs.received.Load()
	res.Missing = max(0, expected-res.Delivered)
	res.Duplicated = cs.dups.Load()
	res.OutOfOrder = cs.gaps.Load()
	res.Stray = cs.stray.Load()
	res.Retried = cs.retried.Load()
	if secs := float64(r.lastRecv.Load()-sendStart.UnixNano()) / 1e9; secs > 0 {
		res.DeliveriesPerSec = float64(res.Delivered) / secs
	}
	res.SendSeconds = sendSeconds
	if cs.reconnect != nil {
		res.Reconnects = cs.reconnects.Load()
		res.Resumed = cs.resumed.Load()
		res.Resent = cs.resent.Load()
		res.ReconnectRetries = r.pool.ReconnectRetries()
		res.ReconnectLatency = cs.reconnectLat.Latency()
		res.RedialLatency = cs.redialLat.Latency()
		res.reconnect, res.redial = &cs.reconnectLat, &cs.redialLat
	}
	if r.cfg.Scenario == ScenarioChurn {
		res.ChurnCycles = cs.churns.Load()
		res.ChurnFailures = cs.churnFails.Load()
		res.ChurnLatency = churnLatency.Latency()
	}
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
		for r.byRound[rd].Load() < expected && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(2 * time.Millisecond)
		}
		got := r.byRound[rd].Load() // on time: what came by the round's timeout
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
	// What came after its round's timeout is late, not lost: wait for the
	// stragglers (until nothing has come for a second, at most one more
	// RoundTimeout or 5 s), then count what never came as missing.
	drainUntil := time.Now().Add(max(cfg.RoundTimeout, 5*time.Second))
	for last, quiet := int64(-1), time.Now(); time.Now().Before(drainUntil) && ctx.Err() == nil; time.Sleep(20 * time.Millisecond) {
		var all int64
		for i := range res.Rounds {
			all += r.byRound[i].Load()
		}
		if all != last {
			last, quiet = all, time.Now()
		} else if time.Since(quiet) >= time.Second || all == res.Expected {
			break
		}
	}
	res.Missing, res.Late = 0, 0
	for i := range res.Rounds {
		rr := &res.Rounds[i]
		final := r.byRound[i].Load()
		rr.Late = final - rr.Deliveries
		rr.Missing = rr.Recipients*int64(cfg.Burst) - final
		res.Late += rr.Late
		res.Missing += rr.Missing
	}
	res.Duplicated = r.dups.Load()
	res.OutOfOrder = r.reorder.Load()
	if totalSeconds > 0 {
		res.DeliveriesPerSec = float64(totalDeliveries) / totalSeconds
	}
}

// sample records a point of the series every second, prints the progress
// line, and stops when the returned func is called.
func (r *run) sample(began time.Time, res *Result) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		ramp := time.NewTicker(100 * time.Millisecond) // the connect phase, finer
		defer ramp.Stop()
		var last int64
		var lastCPU time.Duration
		lastAt := time.Now()
		if len(r.cfg.ServerPIDs) > 0 {
			for _, pid := range r.cfg.ServerPIDs {
				lastCPU += cpuOf(strconv.Itoa(pid))
			}
		}
		for {
			select {
			case <-t.C:
				m := r.messages.Load()
				w := r.window.Swap(new(Histogram))
				s := Sample{
					T: time.Since(began).Seconds(), Open: r.pool.Open(), Failed: r.pool.Failed(),
					Received: m - last, P50: ms(w.Quantile(0.5)), P99: ms(w.Quantile(0.99)), Max: ms(w.Max()),
				}
				last = m
				if len(r.cfg.ServerPIDs) > 0 {
					var cpu time.Duration
					for _, pid := range r.cfg.ServerPIDs {
						s.ServerRSS += rssOf(strconv.Itoa(pid))
						cpu += cpuOf(strconv.Itoa(pid))
					}
					if lastCPU > 0 {
						s.ServerCPU = (cpu - lastCPU).Seconds() / time.Since(lastAt).Seconds()
					}
					lastCPU, lastAt = cpu, time.Now()
				}
				res.Series = append(res.Series, s)
				if r.cfg.Progress != nil {
					fmt.Fprintf(r.cfg.Progress, "%6.1fs  open %d/%d  failed %d  msgs/s %d  p99 %.1fms\n",
						s.T, s.Open, r.cfg.Clients, s.Failed, s.Received, s.P99)
				}
			case <-ramp.C:
				open := r.pool.Open()
				if len(res.Ramp) == 0 || res.Ramp[len(res.Ramp)-1].Open < r.cfg.Clients {
					res.Ramp = append(res.Ramp, RampPoint{T: time.Since(began).Seconds(), Open: open})
				}
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ownCPU returns this process's user plus system CPU time.
func ownCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuOf reads the user and system CPU time of /proc/<pid>/stat (0 if
// unreadable).
func cpuOf(pid string) time.Duration {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// The command may hold spaces: fields count from after its ")".
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
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
