package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parleyhq/parley/chat/natsbroker"
)

// clusterConfig is what `parley cluster` runs: an embedded NATS server (or
// NATSServers `parley nats` processes clustered) and Nodes `parley serve`
// processes joined through it.
type clusterConfig struct {
	Nodes       int
	NATSServers int    // 1: embedded in this process; more: `parley nats` processes, clustered
	NATSCluster int    // with NATSServers > 1: server i's route port is NATSCluster+i-1
	NATSPIDFile string // "server pid addr cluster-addr" per line
	Addr        string // the first node's host:port; the others count up from it, or share it
	SharedPort  bool   // every node on Addr with SO_REUSEPORT
	NATSAddr    string
	NATSStore   int64  // each NATS server's JetStream store limit (natsbroker.ServerConfig.MaxStore)
	DataDir     string // the embedded NATS's store: rooms' history on disk ("": in memory)
	MetricsPort int    // node i serves /metrics on MetricsPort+i-1 (0: on its main listener)
	PIDFile     string // "node pid addr metrics" per line, for scripts
	NodeProcs   int    // GOMAXPROCS of the nodes (0: inherited)
	Serve       []string
	LogLevel    slog.Level
}

func parseCluster(args []string, stderr io.Writer) (clusterConfig, error) {
	cfg := clusterConfig{}
	fs := flag.NewFlagSet("parley cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: parley cluster [flags] [-- serve flags]\n\nRuns a one-machine cluster: an embedded NATS server in this process and --nodes\n`parley serve` processes sharing rooms through it. Flags after -- go to every node.\nSIGINT or SIGTERM stops the nodes, then NATS. A node that dies is reported; the others go on.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.Nodes, "nodes", 3, "how many nodes")
	fs.IntVar(&cfg.NATSServers, "nats-servers", 1, "how many NATS servers: 1 runs in this process; 3 or more run as `parley nats` processes clustered on loopback (server i on --nats-addr's port+i-1, each with its own JetStream store, under --data-dir if given), and rooms' streams get 3 replicas: the chat survives the loss of one")
	fs.IntVar(&cfg.NATSCluster, "nats-cluster-port", 16222, "with --nats-servers > 1, the route port of server 1 (server i: port+i-1), on --nats-addr's host")
	fs.StringVar(&cfg.NATSPIDFile, "nats-pid-file", "", "with --nats-servers > 1, write each NATS server's name, pid, client address and route address to this `file`")
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:1337", "`host:port` of node 1; node i listens on port+i-1 (or all on it with --shared-port)")
	fs.BoolVar(&cfg.SharedPort, "shared-port", false, "every node listens on --addr (SO_REUSEPORT): clients of a node that stops reconnect to the others at the same address")
	fs.Int64Var(&cfg.NATSStore, "nats-max-store", natsbroker.DefaultMaxStore, "most `bytes` each NATS server's JetStream keeps, on disk and in memory; each room's stream reserves --nats-log-bytes of it (-1: nats-server's own limit)")
	fs.StringVar(&cfg.NATSAddr, "nats-addr", "127.0.0.1:4222", "`host:port` of the embedded NATS server (port 0: a free one)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "keep every room's history, epoch and the access rules on disk in this `directory` (the embedded NATS's JetStream file storage; the nodes get --history-storage file), across restarts of the cluster")
	fs.IntVar(&cfg.MetricsPort, "metrics-port", 9100, "node i serves /metrics on this port+i-1, on --addr's host (0: on each node's main listener)")
	fs.IntVar(&cfg.NodeProcs, "node-gomaxprocs", 0, "GOMAXPROCS of each node, apart from this process's (which runs NATS); 0: inherited")
	fs.StringVar(&cfg.PIDFile, "pid-file", "", "write each node's name, pid, address and metrics address to this `file`")
	fs.TextVar(&cfg.LogLevel, "log-level", slog.LevelInfo, "log `level` of the cluster and its nodes")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return cfg, err
		}
		return cfg, errUsage
	}
	cfg.Serve = fs.Args()
	switch {
	case cfg.Nodes < 1 || cfg.Nodes > 64:
		return cfg, fmt.Errorf("--nodes %d: must be 1 to 64", cfg.Nodes)
	case cfg.NATSServers < 1 || cfg.NATSServers > 9:
		return cfg, fmt.Errorf("--nats-servers %d: must be 1 to 9", cfg.NATSServers)
	case cfg.NATSStore <= 0 && cfg.NATSStore != -1:
		return cfg, fmt.Errorf("--nats-max-store %d: want a positive number of bytes, or -1", cfg.NATSStore)
	case cfg.NATSServers == 2:
		return cfg, fmt.Errorf("--nats-servers 2: a NATS cluster of two loses its JetStream with either server; give 1, or 3 or more")
	case cfg.NATSCluster < 1 || cfg.NATSCluster+cfg.NATSServers > 65536:
		return cfg, fmt.Errorf("--nats-cluster-port %d: out of range", cfg.NATSCluster)
	case cfg.NodeProcs < 0:
		return cfg, fmt.Errorf("--node-gomaxprocs %d: must be positive, or 0 to inherit", cfg.NodeProcs)
	case cfg.SharedPort && cfg.MetricsPort == 0:
		return cfg, fmt.Errorf("--shared-port needs --metrics-port: on a shared port /metrics would answer for a random node")
	}
	_, port, err := net.SplitHostPort(cfg.Addr)
	if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 1 || p+cfg.Nodes > 65536 {
		return cfg, fmt.Errorf("--addr %q: want host:port with room for %d ports", cfg.Addr, cfg.Nodes)
	}
	if _, np, err := net.SplitHostPort(cfg.NATSAddr); cfg.NATSServers > 1 {
		if p, perr := strconv.Atoi(np); err != nil || perr != nil || p < 1 || p+cfg.NATSServers > 65536 {
			return cfg, fmt.Errorf("--nats-addr %q: want host:port with room for %d ports (not port 0: the servers route to each other's)", cfg.NATSAddr, cfg.NATSServers)
		}
	}
	if cfg.MetricsPort < 0 || cfg.MetricsPort+cfg.Nodes > 65536 {
		return cfg, fmt.Errorf("--metrics-port %d: out of range", cfg.MetricsPort)
	}
	for _, a := range cfg.Serve {
		for _, own := range []string{"--addr", "--nats", "--nats-embedded", "--node", "--reuse-port", "--metrics-listen", "--data-dir", "--history-storage",
			"--nats-token-file", "--nats-user", "--nats-password-file", "--nats-nkey-seed", "--nats-creds"} {
			if a == own || strings.HasPrefix(a, own+"=") {
				return cfg, fmt.Errorf("%s: set by parley cluster for each node", own)
			}
		}
	}
	_, _, _, check := cfg.args(1, "nats://"+cfg.NATSAddr, os.DevNull) // node 1's command line, checked as serve would
	check = slices.DeleteFunc(check, func(a string) bool { return a == "--nats-token-file" || a == os.DevNull })
	if _, err := parseServe(check[1:], io.Discard); err != nil {
		return cfg, fmt.Errorf("serve flags %q: %w", cfg.Serve, err)
	}
	return cfg, nil
}

// node is one running `parley serve`.
type node struct {
	name, addr, metrics string
	cmd                 *exec.Cmd
	exited              chan struct{} // closed when the process has exited
	err                 error         // how, once exited
}

// args returns the command line of node i (from 1), which authenticates
// to NATS with the token in tokenFile.
func (c *clusterConfig) args(i int, natsURL, tokenFile string) (name, addr, metrics string, args []string) {
	host, port, _ := net.SplitHostPort(c.Addr)
	p, _ := strconv.Atoi(port)
	if !c.SharedPort {
		p += i - 1
	}
	name = "n" + strconv.Itoa(i)
	addr = net.JoinHostPort(host, strconv.Itoa(p))
	args = []string{"serve", "--nats", natsURL, "--nats-token-file", tokenFile, "--node", name, "--addr", addr, "--log-level", c.LogLevel.String()}
	if c.SharedPort {
		args = append(args, "--reuse-port")
	}
	if c.DataDir != "" {
		args = append(args, "--history-storage", "file")
	}
	if c.MetricsPort > 0 {
		metrics = net.JoinHostPort(host, strconv.Itoa(c.MetricsPort+i-1))
		args = append(args, "--metrics-listen", metrics)
	} else {
		metrics = addr
	}
	return name, addr, metrics, append(args, c.Serve...)
}

func runCluster(args []string, stderr io.Writer) error {
	cfg, err := parseCluster(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})).With("component", "cluster")
	raiseOpenFileLimit(log)
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the parley binary: %w", err)
	}
	// The embedded NATS requires a token, made here and handed to the
	// nodes in a file only this user can read (not on their command line,
	// which any user can see).
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("--data-dir: %w", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	exits := make(chan *node)
	var natsURL, tokenFile string
	var servers []*node
	if cfg.NATSServers == 1 {
		ns, err := natsbroker.StartServer(natsbroker.ServerConfig{Addr: cfg.NATSAddr, StoreDir: cfg.DataDir, MaxStore: cfg.NATSStore, Logger: log})
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		if tokenFile, err = writeTokenFile(ns.Token()); err != nil {
			return err
		}
		natsURL = ns.URL()
		log.Info("embedded NATS server", "url", natsURL, "token_file", tokenFile, "data_dir", cfg.DataDir)
	} else {
		token := natsbroker.NewToken()
		if tokenFile, err = writeTokenFile(token); err != nil {
			return err
		}
		defer func() { stopNodes(servers, log) }() // after the nodes (deferred later, run first)
		if servers, natsURL, err = cfg.startNATS(ctx, exe, tokenFile, stderr, exits, log); err != nil {
			return err
		}
		if err := natsbroker.WaitJetStreamAt(natsURL, token, time.Minute); err != nil {
			return err
		}
		log.Info("NATS cluster ready", "servers", len(servers), "url", natsURL, "token_file", tokenFile, "data_dir", cfg.DataDir)
	}
	defer os.Remove(tokenFile)

	var nodes []*node
	defer func() { stopNodes(nodes, log) }()
	var pids strings.Builder
	for i := 1; i <= cfg.Nodes; i++ {
		n := &node{exited: make(chan struct{})}
		var a []string
		n.name, n.addr, n.metrics, a = cfg.args(i, natsURL, tokenFile)
		var env []string
		if cfg.NodeProcs > 0 {
			env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(cfg.NodeProcs))
		}
		if err := n.start(ctx, exe, a, env, stderr, exits); err != nil {
			return fmt.Errorf("starting node %s: %w", n.name, err)
		}
		nodes = append(nodes, n)
		log.Info("node started", "node", n.name, "pid", n.cmd.Process.Pid, "addr", n.addr, "metrics", "http://"+n.metrics+"/metrics")
		fmt.Fprintf(&pids, "%s %d %s %s\n", n.name, n.cmd.Process.Pid, n.addr, n.metrics)
	}
	if cfg.PIDFile != "" {
		if err := os.WriteFile(cfg.PIDFile, []byte(pids.String()), 0o644); err != nil {
			return fmt.Errorf("--pid-file: %w", err)
		}
	}
	for running := len(nodes); running > 0; {
		select {
		case <-ctx.Done():
			log.Info("stopping the cluster")
			return nil
		case n := <-exits:
			if slices.Contains(servers, n) {
				log.Warn("a NATS server exited; the others go on", "server", n.name, "err", n.err)
				continue
			}
			running--
			log.Warn("a node exited; the others go on", "node", n.name, "err", n.err, "running", running)
		}
	}
	return errors.New("every node exited")
}

// start starts n's process with args (and env, if not nil), and reports
// its exit on exits.
func (n *node) start(ctx context.Context, exe string, args, env []string, stderr io.Writer, exits chan<- *node) error {
	n.cmd = exec.Command(exe, args...)
	n.cmd.Stdout, n.cmd.Stderr, n.cmd.Env = stderr, stderr, env
	// Should this process die without stopping them, its children get SIGTERM.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := n.cmd.Start(); err != nil {
		return err
	}
	go func() {
		n.err = n.cmd.Wait()
		close(n.exited)
		select {
		case exits <- n:
		case <-ctx.Done():
		}
	}()
	return nil
}

// startNATS starts the NATSServers `parley nats` processes of a NATS
// cluster, and returns them and the URL that names them all.
func (c *clusterConfig) startNATS(ctx context.Context, exe, tokenFile string, stderr io.Writer, exits chan<- *node, log *slog.Logger) ([]*node, string, error) {
	host, port, _ := net.SplitHostPort(c.NATSAddr)
	p, _ := strconv.Atoi(port)
	var routes, urls []string
	for i := range c.NATSServers {
		routes = append(routes, net.JoinHostPort(host, strconv.Itoa(c.NATSCluster+i)))
		urls = append(urls, "nats://"+net.JoinHostPort(host, strconv.Itoa(p+i)))
	}
	var servers []*node
	var pids strings.Builder
	for i := range c.NATSServers {
		n := &node{name: "s" + strconv.Itoa(i+1), addr: net.JoinHostPort(host, strconv.Itoa(p+i)), exited: make(chan struct{})}
		store := ""
		if c.DataDir != "" {
			store = filepath.Join(c.DataDir, "nats-"+n.name)
		}
		args := []string{"nats", "--addr", n.addr, "--cluster-addr", routes[i], "--routes", strings.Join(routes, ","),
			"--name", n.name, "--token-file", tokenFile, "--max-store", strconv.FormatInt(c.NATSStore, 10), "--log-level", c.LogLevel.String()}
		if store != "" {
			args = append(args, "--store-dir", store)
		}
		if err := n.start(ctx, exe, args, nil, stderr, exits); err != nil {
			return servers, "", fmt.Errorf("starting NATS server %s: %w", n.name, err)
		}
		servers = append(servers, n)
		log.Info("NATS server started", "server", n.name, "pid", n.cmd.Process.Pid, "addr", n.addr, "routes", routes[i], "store_dir", store)
		fmt.Fprintf(&pids, "%s %d %s %s\n", n.name, n.cmd.Process.Pid, n.addr, routes[i])
	}
	if c.NATSPIDFile != "" {
		if err := os.WriteFile(c.NATSPIDFile, []byte(pids.String()), 0o644); err != nil {
			return servers, "", fmt.Errorf("--nats-pid-file: %w", err)
		}
	}
	return servers, strings.Join(urls, ","), nil
}

// stopNodes sends SIGTERM to the nodes still running and waits for them
// (SIGKILL after 20 s).
func stopNodes(nodes []*node, log *slog.Logger) {
	for _, n := range nodes {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(20 * time.Second)
	for _, n := range nodes {
		select {
		case <-n.exited:
		case <-deadline:
			log.Warn("a node did not stop in time: killing it", "node", n.name)
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	}
}
