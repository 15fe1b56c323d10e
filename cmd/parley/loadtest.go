package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/lesismal/nbio/logging"
	"github.com/parleyhq/parley/loadtest"
)

// intList is a repeatable int flag.
type intList []int

func (l *intList) String() string { return fmt.Sprint(*l) }
func (l *intList) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return err
	}
	*l = append(*l, n)
	return nil
}

type loadtestOutputs struct{ json, html string }

func parseLoadtest(args []string, stderr io.Writer) (loadtest.Config, loadtestOutputs, error) {
	var cfg loadtest.Config
	var targets stringList
	var pids intList
	var out loadtestOutputs
	fs := flag.NewFlagSet("parley loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: parley loadtest [flags]\n\nOpens many WebSocket clients against loopback targets, holds them, and reports.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Scenario, "scenario", loadtest.ScenarioHold, "`name`: hold (connect, hold, measure memory), burst (client 0 sends bursts every client must receive), chat (rooms, each client says --rate messages per second, all checked), churn (chat while some clients keep leaving and coming back), flood (chat while --flooders hostile clients send as fast as they can), siege (for --duration, idle clients that never say anything and --idle-sockets never-upgraded sockets hold the server's slots, each dialed again when dropped: run a chat from other --sources beside it, scripts/siege.sh)")
	fs.IntVar(&cfg.RoomSize, "room-size", loadtest.DefaultRoomSize, "members per room (chat, churn)")
	fs.Float64Var(&cfg.Rate, "rate", loadtest.DefaultRate, "messages per second each client says (chat, churn)")
	fs.DurationVar(&cfg.Duration, "duration", loadtest.DefaultDuration, "how long the clients chat (chat, churn)")
	fs.Float64Var(&cfg.ChurnFraction, "churn-fraction", loadtest.DefaultChurnFraction, "share of the clients that keep leaving and coming back (churn)")
	fs.Float64Var(&cfg.ChurnRate, "churn-rate", loadtest.DefaultChurnRate, "reconnections per second (churn)")
	fs.IntVar(&cfg.IdleSockets, "idle-sockets", 0, "TCP connections that never send their upgrade, beside the idle clients, each dialed again when dropped (siege)")
	fs.IntVar(&cfg.Flooders, "flooders", loadtest.DefaultFlooders, "hostile clients, each sending as fast as its socket takes it and coming back when closed (flood)")
	fs.StringVar(&cfg.FloodKind, "flood-kind", loadtest.FloodMixed, "what flooders send: say, typing, history, ping, or mixed (flood)")
	fs.IntVar(&cfg.FloodSize, "flood-size", loadtest.DefaultFloodSize, "`bytes` of text in a flooder's say or typing request (flood)")
	fs.BoolVar(&cfg.Reconnect, "reconnect", false, "a client the server closes or drops reconnects to the next --target and resumes its room from the last sequence number it saw (chat, churn)")
	fs.DurationVar(&cfg.MaxP99, "max-p99", 0, "fail the run if end-to-end p99 latency exceeds this (0: no limit)")
	fs.IntVar(&cfg.MaxErrors, "max-errors", 0, "fail the run past this many errors: failed or lost connections, missing or duplicated messages (-1: no limit)")
	var metricsURLs stringList
	fs.Var(&metricsURLs, "metrics-url", "a server's `url` (http://127.0.0.1:1337/metrics) to read its RSS and CPU from; repeatable")
	fs.IntVar(&cfg.Burst, "burst", loadtest.DefaultBurst, "messages per round (burst)")
	fs.IntVar(&cfg.Rounds, "rounds", loadtest.DefaultRounds, "number of bursts (burst)")
	fs.DurationVar(&cfg.RoundTimeout, "round-timeout", loadtest.DefaultRoundTimeout, "bound on one round; undelivered messages count as missing (burst)")
	fs.Var(&targets, "target", "WebSocket `url`, ws:// or wss:// (loopback only); repeatable, clients spread over them (default "+loadtest.DefaultTarget+")")
	fs.IntVar(&cfg.Clients, "clients", loadtest.DefaultClients, "connections to open")
	fs.IntVar(&cfg.Dialers, "dialers", loadtest.DefaultDialers, "connections being opened at once (per worker)")
	fs.Float64Var(&cfg.Ramp, "ramp", 0, "new connections per second at most, over all workers (0: as fast as the dialers go)")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", loadtest.DefaultConnectTimeout, "bound on one connection's connect and upgrade")
	fs.StringVar(&cfg.Sources, "sources", loadtest.DefaultSources, "loopback source `range` A or A-B the connections are bound to, round-robin")
	fs.StringVar(&cfg.Origin, "origin", "", "Origin header to send (none by default)")
	fs.BoolVar(&cfg.Compression, "compression", false, "offer permessage-deflate; compressed messages are inflated, and the bytes on the wire reported")
	fs.StringVar(&cfg.TokenSecretFile, "token-secret", "", "HMAC secret `file` (the server's --jwt-secret): each client signs an HS256 token for user lt-<n> and connects with it")
	fs.StringVar(&cfg.TokenAudience, "token-audience", "", "the tokens' aud (the server's --jwt-audience)")
	fs.StringVar(&cfg.TLSCAFile, "tls-ca", "", "PEM `file` of the certificates wss:// targets are verified against (default: the system's)")
	fs.BoolVar(&cfg.TLSInsecure, "tls-insecure", false, "do not verify wss:// targets' certificates (self-signed test servers)")
	fs.DurationVar(&cfg.Hold, "hold", loadtest.DefaultHold, "how long to hold the connections once dialed")
	fs.DurationVar(&cfg.TimeLimit, "time-limit", 0, "hard bound on the whole run (0: hold plus a minute per 10,000 clients, at least 2m)")
	fs.Var(&pids, "server-pid", "`pid` of a server process whose RSS to report per connection; repeatable")
	fs.StringVar(&out.json, "json", "", "also write the result as JSON to this `file`")
	fs.StringVar(&out.html, "html", "", "also write a self-contained HTML report with charts to this `file`")
	fs.IntVar(&cfg.Workers, "workers", 0, "processes to run the clients in (0: one per 17,000 clients)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return cfg, out, err
		}
		return cfg, out, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "parley loadtest: unexpected argument %q\n", fs.Arg(0))
		return cfg, out, errUsage
	}
	cfg.Targets = targets
	cfg.ServerPIDs = pids
	cfg.MetricsURLs = metricsURLs
	// A flag the scenario does not use is an error, not silently ignored:
	// --duration with hold used to do nothing.
	chatOnly := map[string]bool{"duration": true, "rate": true, "room-size": true, "reconnect": true, "churn-fraction": true,
		"churn-rate": true, "flooders": true, "flood-kind": true, "flood-size": true}
	burstOnly := map[string]bool{"burst": true, "rounds": true, "round-timeout": true}
	var unused error
	fs.Visit(func(f *flag.Flag) {
		switch {
		case unused != nil:
		case chatOnly[f.Name] && (cfg.Scenario == "" || cfg.Scenario == loadtest.ScenarioHold || cfg.Scenario == loadtest.ScenarioBurst):
			unused = fmt.Errorf("--%s applies to the chat, churn and flood scenarios, not %s (hold holds for --hold)", f.Name, scenarioName(cfg.Scenario))
		case burstOnly[f.Name] && cfg.Scenario != loadtest.ScenarioBurst:
			unused = fmt.Errorf("--%s applies to the burst scenario, not %s", f.Name, scenarioName(cfg.Scenario))
		}
	})
	if unused != nil {
		return cfg, out, unused
	}
	return cfg, out, cfg.Validate()
}

func scenarioName(s string) string {
	if s == "" {
		return loadtest.ScenarioHold
	}
	return s
}

func runLoadtest(args []string, stdout, stderr io.Writer) error {
	cfg, out, err := parseLoadtest(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	logging.SetLogger(newNbioLogger(log.With("component", "nbio")))
	raiseOpenFileLimit(log)
	cfg.Logger = log
	cfg.Progress = stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadtest.Run(ctx, cfg)
	if err != nil {
		return err
	}
	res.Command = append([]string{"parley", "loadtest"}, args...)
	res.Revision = version()
	res.WriteText(stdout)
	if out.json != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(out.json, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", out.json, err)
		}
	}
	if out.html != "" {
		f, err := os.Create(out.html)
		if err != nil {
			return fmt.Errorf("write %s: %w", out.html, err)
		}
		err = res.WriteHTML(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", out.html, err)
		}
	}
	if !res.Passed {
		return fmt.Errorf("the run %s", res.Verdict)
	}
	return nil
}

// runLoadtestWorker runs one worker process of a multi-process load test:
// its configuration and phases come on stdin, its events go to stdout.
func runLoadtestWorker(stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	logging.SetLogger(newNbioLogger(log.With("component", "nbio")))
	raiseOpenFileLimit(log)
	return loadtest.RunWorker(context.Background(), os.Stdin, os.Stdout)
}
