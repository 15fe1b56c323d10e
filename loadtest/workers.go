package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// DefaultPerWorker is the most clients one process opens: the 20,000
// open-file limit, less room for the process's own files.
const DefaultPerWorker = 17000

// workerMessage is one line between the coordinator and a worker.
type workerMessage struct {
	Event   string        `json:"event"` // connected, done, result, error
	Result  *Result       `json:"result,omitempty"`
	Latency histogramData `json:"latency"`
	Connect histogramData `json:"connect"`
	Reconn  histogramData `json:"reconnect"`
	Redial  histogramData `json:"redial"`
	Error   string        `json:"error,omitempty"`
}

// workers returns how many processes cfg needs.
func workers(cfg Config) int {
	if cfg.Workers > 0 {
		return cfg.Workers
	}
	return (cfg.Clients + cfg.PerWorker - 1) / cfg.PerWorker
}

// shares splits clients into n contiguous shares; for the chat scenarios
// every share but the last is a whole number of rooms.
func shares(cfg Config, n int) (offsets, sizes []int) {
	per := (cfg.Clients + n - 1) / n
	if isChat(cfg.Scenario) {
		per = (per + cfg.RoomSize - 1) / cfg.RoomSize * cfg.RoomSize
	}
	for off := 0; off < cfg.Clients; off += per {
		offsets = append(offsets, off)
		sizes = append(sizes, min(per, cfg.Clients-off))
	}
	return offsets, sizes
}

// runWorkers runs cfg over several worker processes and merges their
// results.
func runWorkers(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Scenario == ScenarioBurst {
		return nil, errors.New("loadtest: the burst scenario runs in one process: at most PerWorker clients")
	}
	command := cfg.WorkerCommand
	if len(command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("loadtest: find this program to start workers: %w", err)
		}
		command = []string{exe, "loadtest-worker"}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.TimeLimit+30*time.Second)
	defer cancel()
	offsets, sizes := shares(cfg, workers(cfg))
	type worker struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out chan workerMessage
	}
	var ws []*worker
	defer func() {
		for _, w := range ws {
			_ = w.in.Close()
			_ = w.cmd.Process.Kill()
			_ = w.cmd.Wait()
		}
	}()
	began := time.Now()
	before := scrapeServers(cfg.MetricsURLs)
	for i := range offsets {
		share := cfg
		share.Offset, share.Clients, share.TotalClients = offsets[i], sizes[i], cfg.Clients
		share.Ramp = cfg.Ramp * float64(sizes[i]) / float64(cfg.Clients) // the workers' ramps add up
		share.Workers, share.ServerPIDs, share.MetricsURLs, share.Progress, share.Logger = 1, nil, nil, nil, nil
		spec, err := json.Marshal(share)
		if err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, command[0], command[1:]...)
		cmd.Env = append(os.Environ(), cfg.WorkerEnv...)
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		outPipe, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("loadtest: start worker %d: %w", i, err)
		}
		w := &worker{cmd: cmd, in: in, out: make(chan workerMessage, 4)}
		ws = append(ws, w)
		go func() {
			defer close(w.out)
			sc := bufio.NewScanner(outPipe)
			sc.Buffer(make([]byte, 1<<20), 64<<20)
			for sc.Scan() {
				var m workerMessage
				if json.Unmarshal(sc.Bytes(), &m) == nil {
					w.out <- m
				}
			}
		}()
		if _, err := fmt.Fprintf(in, "%s\n", spec); err != nil {
			return nil, fmt.Errorf("loadtest: configure worker %d: %w", i, err)
		}
	}
	// await collects one event from every worker.
	await := func(event string) ([]workerMessage, error) {
		got := make([]workerMessage, len(ws))
		for i, w := range ws {
			select {
			case m, ok := <-w.out:
				switch {
				case !ok:
					return nil, fmt.Errorf("loadtest: worker %d exited before %q", i, event)
				case m.Event == "error":
					return nil, fmt.Errorf("loadtest: worker %d: %s", i, m.Error)
				case m.Event != event:
					return nil, fmt.Errorf("loadtest: worker %d said %q, want %q", i, m.Event, event)
				}
				got[i] = m
			case <-ctx.Done():
				return nil, fmt.Errorf("loadtest: waiting for workers to be %s: %w", event, ctx.Err())
			}
		}
		return got, nil
	}
	tell := func(word string) {
		for _, w := range ws {
			_, _ = io.WriteString(w.in, word+"\n")
		}
	}
	if _, err := await("connected"); err != nil {
		return nil, err
	}
	connectSeconds := time.Since(began).Seconds()
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "%6.1fs  %d workers connected\n", connectSeconds, len(ws))
	}
	tell("go")
	if _, err := await("done"); err != nil {
		return nil, err
	}
	res := &Result{Scenario: cfg.Scenario, Clients: cfg.Clients, Targets: cfg.Targets, Workers: len(ws),
		ConnectSeconds: connectSeconds, Failures: map[string]int{}, ClosedByServer: map[string]int{}}
	res.measureServers(cfg, before)
	tell("finish")
	results, err := await("result")
	if err != nil {
		return nil, err
	}
	res.merge(results)
	if connectSeconds > 0 {
		res.ConnectRate = float64(res.Connected) / connectSeconds
	}
	if res.OpenAtEnd > 0 {
		res.ClientRSSPerConn = float64(res.ClientRSSBytes) / float64(res.OpenAtEnd)
		res.ServerRSSPerConn = float64(res.ServerRSSBytes) / float64(res.OpenAtEnd)
	}
	res.Seconds = time.Since(began).Seconds()
	res.evaluate(cfg)
	return res, nil
}

// merge adds the workers' results into r.
func (r *Result) merge(ms []workerMessage) {
	var lat, conn, reconn, redial Histogram
	var sendSeconds float64
	for _, m := range ms {
		w := m.Result
		lat.add(m.Latency)
		conn.add(m.Connect)
		reconn.add(m.Reconn)
		redial.add(m.Redial)
		r.Reconnects += w.Reconnects
		r.Resumed += w.Resumed
		r.Resent += w.Resent
		r.Retried += w.Retried
		for k, v := range w.ReconnectRetries {
			if r.ReconnectRetries == nil {
				r.ReconnectRetries = make(map[string]int)
			}
			r.ReconnectRetries[k] += v
		}
		r.Connected += w.Connected
		r.Failed += w.Failed
		r.OpenAtEnd += w.OpenAtEnd
		r.MessagesReceived += w.MessagesReceived
		r.MessagesSent += w.MessagesSent
		r.Expected += w.Expected
		r.Delivered += w.Delivered
		r.Missing += w.Missing
		r.Duplicated += w.Duplicated
		r.OutOfOrder += w.OutOfOrder
		r.Stray += w.Stray
		r.Joined += w.Joined
		r.JoinsAsked += w.JoinsAsked
		if r.JoinRefusal == "" {
			r.JoinRefusal = w.JoinRefusal
		}
		r.ProtocolErrors += w.ProtocolErrors
		r.WireBytesIn += w.WireBytesIn
		r.DeflateClients += w.DeflateClients
		r.CompressedIn += w.CompressedIn
		r.ChurnCycles += w.ChurnCycles
		r.ChurnFailures += w.ChurnFailures
		r.ClientRSSBytes += w.ClientRSSBytes
		r.ClientCPUSeconds += w.ClientCPUSeconds
		r.RoomSize = w.RoomSize
		r.HitTimeLimit = r.HitTimeLimit || w.HitTimeLimit
		sendSeconds = max(sendSeconds, w.SendSeconds)
		for k, v := range w.Failures {
			r.Failures[k] += v
		}
		for k, v := range w.ClosedByServer {
			r.ClosedByServer[k] += v
		}
		// Series: counts add up; latency per second is the worst worker's.
		for i, s := range w.Series {
			if i >= len(r.Series) {
				r.Series = append(r.Series, Sample{T: s.T})
			}
			p := &r.Series[i]
			p.Open += s.Open
			p.Failed += s.Failed
			p.Received += s.Received
			p.P50, p.P99, p.Max = max(p.P50, s.P50), max(p.P99, s.P99), max(p.Max, s.Max)
			// Every worker reads the same servers: one reading, not a sum.
			p.ServerRSS, p.ServerCPU = max(p.ServerRSS, s.ServerRSS), max(p.ServerCPU, s.ServerCPU)
		}
		for i, rp := range w.Ramp {
			if i >= len(r.Ramp) {
				r.Ramp = append(r.Ramp, RampPoint{T: rp.T})
			}
			r.Ramp[i].Open += rp.Open
		}
		if r.StartedAt == "" || w.StartedAt < r.StartedAt {
			r.StartedAt = w.StartedAt
		}
	}
	r.SendSeconds = sendSeconds
	if r.MessagesReceived > 0 {
		r.WireBytesPerMsg = float64(r.WireBytesIn) / float64(r.MessagesReceived)
	}
	if sendSeconds > 0 && r.Delivered > 0 {
		var dps float64
		for _, m := range ms {
			dps += m.Result.DeliveriesPerSec
		}
		r.DeliveriesPerSec = dps
	}
	r.latency = &lat
	r.EndToEnd = lat.Latency()
	r.ConnectLatency = conn.Latency()
	r.ReconnectLatency = reconn.Latency()
	r.RedialLatency = redial.Latency()
}

// RunWorker is the worker side: it reads its Config from in, runs it, and
// talks to the coordinator over in and out. `parley loadtest-worker` calls
// it.
func RunWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	rd := bufio.NewReader(in)
	line, err := rd.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("loadtest worker: read the configuration: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(line, &cfg); err != nil {
		return fmt.Errorf("loadtest worker: configuration: %w", err)
	}
	var mu sync.Mutex
	say := func(m workerMessage) {
		mu.Lock()
		defer mu.Unlock()
		b, _ := json.Marshal(m)
		_, _ = out.Write(append(b, '\n'))
	}
	wait := func(word string) error {
		got, err := rd.ReadString('\n')
		if err != nil {
			return fmt.Errorf("loadtest worker: waiting for %q: %w", word, err)
		}
		if got != word+"\n" {
			return fmt.Errorf("loadtest worker: got %q, want %q", got, word)
		}
		return nil
	}
	res, err := runWith(ctx, cfg, func(phase string) error {
		switch phase {
		case "connected":
			say(workerMessage{Event: "connected"})
			return wait("go")
		case "done":
			say(workerMessage{Event: "done"})
			return wait("finish")
		}
		return nil
	})
	if err != nil {
		say(workerMessage{Event: "error", Error: err.Error()})
		return err
	}
	msg := workerMessage{Event: "result", Result: res, Latency: res.latency.export(), Connect: res.connect.export()}
	if res.reconnect != nil {
		msg.Reconn, msg.Redial = res.reconnect.export(), res.redial.export()
	}
	say(msg)
	return nil
}
