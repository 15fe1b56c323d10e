package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/parleyhq/parley/chat/natsbroker"
)

// natsConfig is what `parley nats` runs: one embedded NATS server with
// JetStream, alone or one of a NATS cluster.
type natsConfig struct {
	Server    natsbroker.ServerConfig
	TokenFile string
	LogLevel  slog.Level
}

func parseNATS(args []string, stderr io.Writer) (natsConfig, error) {
	var cfg natsConfig
	var routes string
	fs := flag.NewFlagSet("parley nats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: parley nats [flags]\n\nRuns one NATS server with JetStream (the one embedded in parley), alone or, with\n--cluster-addr and --routes, one of a NATS cluster: what `parley cluster --nats-servers N`\nstarts N of. Nodes join it with `parley serve --nats URL --nats-token-file FILE`.\nSIGINT or SIGTERM stops it gracefully (lame duck: the streams it leads get new leaders\nfirst, then its clients are let go over 2 s).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Server.Addr, "addr", "127.0.0.1:4222", "`host:port` clients (the nodes) connect to")
	fs.StringVar(&cfg.Server.ClusterAddr, "cluster-addr", "", "`host:port` the other servers of the NATS cluster connect to (empty: alone)")
	fs.StringVar(&routes, "routes", "", "comma-separated `host:port` list of the cluster's servers' --cluster-addr (this one's may be in it)")
	fs.StringVar(&cfg.Server.Name, "name", "", "this server's `name` in the cluster, unique (default: parley-embedded)")
	fs.StringVar(&cfg.Server.StoreDir, "store-dir", "", "JetStream's `directory`: the rooms' logs with --history-storage file (default: a temporary one, removed at exit)")
	fs.Int64Var(&cfg.Server.MaxStore, "max-store", natsbroker.DefaultMaxStore, "most `bytes` JetStream keeps, on disk and in memory; each room's stream reserves the nodes' --nats-log-bytes of it (-1: nats-server's own limit, 75% of the free disk)")
	fs.StringVar(&cfg.Server.MonitorAddr, "monitor-addr", "", "serve NATS's HTTP monitoring on this `host:port` (/healthz: 200 once JetStream is ready)")
	fs.StringVar(&cfg.TokenFile, "token-file", "", "`file` holding the token clients and routes must present (required)")
	fs.TextVar(&cfg.LogLevel, "log-level", slog.LevelInfo, "log `level`")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return cfg, err
		}
		return cfg, errUsage
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.TokenFile == "" {
		return cfg, fmt.Errorf("--token-file is required: the server admits only clients with its token")
	}
	tok, err := readSecret(cfg.TokenFile)
	if err != nil {
		return cfg, fmt.Errorf("--token-file: %w", err)
	}
	cfg.Server.Token = tok
	if routes != "" {
		if cfg.Server.ClusterAddr == "" {
			return cfg, fmt.Errorf("--routes needs --cluster-addr")
		}
		cfg.Server.Routes = strings.Split(routes, ",")
	}
	return cfg, nil
}

func runNATS(args []string, stderr io.Writer) error {
	cfg, err := parseNATS(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})).With("component", "nats", "server", cfg.Server.Name)
	raiseOpenFileLimit(log)
	cfg.Server.Logger = log
	ns, err := natsbroker.StartServer(cfg.Server)
	if err != nil {
		return err
	}
	log.Info("NATS server started", "url", ns.URL(), "cluster", ns.ClusterAddr(), "routes", cfg.Server.Routes, "store_dir", cfg.Server.StoreDir)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	log.Info("stopping the NATS server: its leaders move to the others, then its clients are let go")
	ns.Stop()
	return nil
}
