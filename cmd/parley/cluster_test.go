package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/protocol"
)

func TestParseClusterFlags(t *testing.T) {
	cfg, err := parseServe([]string{"--nats", "nats://127.0.0.1:4222", "--node", "n1", "--nats-prefix", "p2",
		"--node-heartbeat", "2s", "--reuse-port", "--pprof", "--metrics-listen", "127.0.0.1:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if n := cfg.NATS; n.URL != "nats://127.0.0.1:4222" || n.Node != "n1" || n.Prefix != "p2" || n.Heartbeat != 2*time.Second ||
		!cfg.Engine.ReusePort || !cfg.Pprof || !cfg.clustered() {
		t.Fatalf("parsed %+v", cfg)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nats", "nats://x:1", "--node", "Bad-Name"}, `Node "Bad-Name"`},
		{[]string{"--nats", "nats://x:1", "--nats-embedded", "127.0.0.1:0"}, "--nats and --nats-embedded"},
		{[]string{"--nats-embedded", "nocolon"}, "--nats-embedded"},
		{[]string{"--nats", "nats://x:1", "--node-heartbeat", "1ms"}, "Heartbeat (1ms)"},
		{[]string{"--pprof"}, "--pprof needs --metrics-listen"},
		{[]string{"--nats", "nats://x:1", "--replicas", "7"}, "Replicas (7)"},
		{[]string{"--nats", "nats://x:1", "--nats-publish-timeout", "5m"}, "PublishTimeout (5m0s)"},
		{[]string{"--nats", "nats://x:1", "--history-size", "50", "--nats-log-size", "10"}, "LogSize (10)"},
		{[]string{"--replicas", "3"}, "--replicas: needs --nats"},
	} {
		if _, err := parseServe(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nodes", "0"}, "--nodes 0"},
		{[]string{"--node-gomaxprocs", "-1"}, "--node-gomaxprocs -1"},
		{[]string{"--shared-port", "--metrics-port", "0"}, "--shared-port needs --metrics-port"},
		{[]string{"--addr", "nocolon"}, "--addr"},
		{[]string{"--", "--node", "x"}, "--node: set by parley cluster"},
		{[]string{"--", "--max-connections", "-5"}, "MaxConnections (-5)"},
		{[]string{"--nats-servers", "2"}, "--nats-servers 2"},
		{[]string{"--nats-max-store", "-5"}, "--nats-max-store -5"},
		{[]string{"--nats-servers", "3", "--nats-addr", "127.0.0.1:0"}, "not port 0"},
	} {
		if _, err := parseCluster(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("cluster %v: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}

// freePorts returns the first of n consecutive ports that are free now.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for base := 20000 + os.Getpid()%20000; base < 65000; base += 97 {
		var ls []net.Listener
		for p := base; p < base+n; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if len(ls) == n {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

// waitHTTP polls url until it answers 200, for at most 20 s.
func waitHTTP(t *testing.T, url string) string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within 20s", url)
		}
	}
}

// TestServeEmbeddedNATS: one node starts NATS inside itself, a second
// joins through it, and a room spans the two.
func TestServeEmbeddedNATS(t *testing.T) {
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1))
	token := filepath.Join(t.TempDir(), "nats.token")
	if err := os.WriteFile(token, []byte("a-token-for-this-test-only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, a := startParley(t, "--nats-embedded", natsAddr, "--nats-token-file", token, "--node", "a", "--log-level", "info")
	_, b := startParley(t, "--nats", "nats://"+natsAddr, "--nats-token-file", token, "--node", "b", "--log-level", "info")
	ca, cb := chattest.Connect(t, "ws://"+a+"/ws"), chattest.Connect(t, "ws://"+b+"/ws")
	if !strings.HasPrefix(ca.Nick, "guest-a-") || !strings.HasPrefix(cb.Nick, "guest-b-") {
		t.Fatalf("guest nicks %q and %q do not name their nodes", ca.Nick, cb.Nick)
	}
	ca.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "across"})
	for _, c := range []*chattest.Client{ca, cb} {
		if m := c.Expect("message"); m.Text != "across" || m.From != ca.Nick || m.Seq != 1 {
			t.Fatalf("%s got %+v", c.Nick, m)
		}
	}
}

// TestClusterCommand: parley cluster starts NATS and two nodes with their
// own ports and metrics, they share rooms, and SIGTERM stops it all.
func TestClusterCommand(t *testing.T) {
	port := freePorts(t, 4) // two nodes, then their metrics
	mport := port + 2
	pids := filepath.Join(t.TempDir(), "nodes.txt")
	cmd := exec.Command(os.Args[0], "cluster", "--nodes", "2", "--addr", fmt.Sprintf("127.0.0.1:%d", port),
		"--nats-addr", "127.0.0.1:0", "--metrics-port", fmt.Sprint(mport), "--pid-file", pids, "--", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "PARLEY_TEST_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	var cs []*chattest.Client
	for i := range 2 {
		addr := fmt.Sprintf("127.0.0.1:%d", port+i)
		waitHTTP(t, "http://"+addr+"/test")
		cs = append(cs, chattest.Connect(t, "ws://"+addr+"/ws"))
	}
	cs[1].Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "hi n1"})
	for _, c := range cs {
		if m := c.Expect("message"); m.Text != "hi n1" {
			t.Fatalf("%s got %+v", c.Nick, m)
		}
	}
	poll.Until(t, "node 1's metrics to show it connected with one other node", func() bool {
		m := waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
		return strings.Contains(m, "\nparley_nats_connected 1\n") && strings.Contains(m, "\nparley_cluster_nodes 1\n")
	})
	if b, err := os.ReadFile(pids); err != nil || len(strings.Fields(string(b))) != 8 {
		t.Fatalf("pid file: %q, %v", b, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if ce, err := c.ExpectClose(); err != nil || ce.Code != 1001 {
			t.Fatalf("after SIGTERM: %+v, %v; want 1001", ce, err)
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("parley cluster exited with %v, want 0", err)
		}
		exited <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("parley cluster did not exit within 30s of SIGTERM")
	}
}

// TestClusterSharedPort: with --shared-port the nodes listen on one
// address (SO_REUSEPORT) and the kernel spreads the clients over them.
func TestClusterSharedPort(t *testing.T) {
	base := freePorts(t, 3) // the shared port, then two metrics ports
	cmd := exec.Command(os.Args[0], "cluster", "--nodes", "2", "--shared-port", "--addr", fmt.Sprintf("127.0.0.1:%d", base),
		"--nats-addr", "127.0.0.1:0", "--metrics-port", fmt.Sprint(base+1), "--", "--log-level", "warn", "--connect-rate-per-addr", "-1") // 40 clients at once from one address
	cmd.Env = append(os.Environ(), "PARLEY_TEST_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopCluster(t, cmd) })
	for i := 1; i <= 2; i++ {
		waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", base+i))
	}
	const clients = 40
	for range clients {
		chattest.Connect(t, fmt.Sprintf("ws://127.0.0.1:%d/ws", base))
	}
	var per []int
	for i := 1; i <= 2; i++ {
		m := waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", base+i))
		var n int
		for _, line := range strings.Split(m, "\n") {
			if _, err := fmt.Sscanf(line, "parley_connections %d", &n); err == nil {
				break
			}
		}
		per = append(per, n)
	}
	if per[0]+per[1] != clients || per[0] == 0 || per[1] == 0 {
		t.Fatalf("clients per node %v: want %d spread over both", per, clients)
	}
}

// stopCluster stops a `parley cluster` as an operator would (SIGTERM: it
// stops its nodes first), killing it only if it hangs.
func stopCluster(t *testing.T, cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("parley cluster exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Error("parley cluster did not stop within 30s of SIGTERM")
	}
}

// TestClusterDataDir: `parley cluster --data-dir` keeps the rooms' history
// and epochs across a restart of the whole cluster.
func TestClusterDataDir(t *testing.T) {
	dir := t.TempDir()
	port := freePorts(t, 4)
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "cluster", "--nodes", "2", "--addr", fmt.Sprintf("127.0.0.1:%d", port),
			"--nats-addr", "127.0.0.1:0", "--metrics-port", fmt.Sprint(port+2), "--data-dir", dir, "--", "--log-level", "warn")
		cmd.Env = append(os.Environ(), "PARLEY_TEST_MAIN=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/test", port+i))
		}
		return cmd
	}
	cmd := start()
	c := chattest.Connect(t, fmt.Sprintf("ws://127.0.0.1:%d/ws", port+1))
	c.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "kept"})
	m := c.Expect("message")
	epoch := roomEpoch(t, fmt.Sprintf("ws://127.0.0.1:%d/ws", port))
	stopCluster(t, cmd)

	cmd = start()
	t.Cleanup(func() { stopCluster(t, cmd) })
	for i := range 2 {
		c := chattest.Dial(t, fmt.Sprintf("ws://127.0.0.1:%d/ws", port+i))
		c.Expect("welcome")
		j := c.Expect("join")
		h := c.Expect("history")
		if j.Epoch != epoch || j.Seq != m.Seq || !slices.Equal(h.Texts(t), []string{"kept"}) {
			t.Fatalf("node %d after the restart: join %+v, history %q; want epoch %d, seq %d, [kept]", i+1, j, h.Texts(t), epoch, m.Seq)
		}
	}
}

// TestClusterNATSServers: `parley cluster --nats-servers 3` runs three
// `parley nats` processes clustered, each with its store under --data-dir,
// and nodes whose rooms have three replicas: SIGKILL of a NATS server
// loses no message, and the cluster still stops cleanly.
func TestClusterNATSServers(t *testing.T) {
	port := freePorts(t, 10) // two nodes, their metrics, three NATS servers, their routes
	mport, nport, rport := port+2, port+4, port+7
	dir := t.TempDir()
	natsPIDs := filepath.Join(dir, "nats.txt")
	cmd := exec.Command(os.Args[0], "cluster", "--nodes", "2", "--nats-servers", "3", "--addr", fmt.Sprintf("127.0.0.1:%d", port),
		"--nats-addr", fmt.Sprintf("127.0.0.1:%d", nport), "--nats-cluster-port", fmt.Sprint(rport), "--metrics-port", fmt.Sprint(mport),
		"--data-dir", filepath.Join(dir, "data"), "--nats-pid-file", natsPIDs, "--log-level", "warn", "--", "--rate-limit", "100")
	cmd.Env = append(os.Environ(), "PARLEY_TEST_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var cs []*chattest.Client
	for i := range 2 {
		addr := fmt.Sprintf("127.0.0.1:%d", port+i)
		waitHTTP(t, "http://"+addr+"/test")
		c := chattest.Connect(t, "ws://"+addr+"/ws")
		_ = c.SetDeadline(time.Now().Add(time.Minute)) // past a leader election (4-9 s)
		cs = append(cs, c)
	}
	b, err := os.ReadFile(natsPIDs)
	if err != nil || len(strings.Fields(string(b))) != 12 {
		t.Fatalf("NATS pid file: %q, %v", b, err)
	}
	var s1 int
	if _, err := fmt.Sscanf(string(b), "s1 %d", &s1); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"nats-s1", "nats-s2", "nats-s3"} {
		if _, err := os.Stat(filepath.Join(dir, "data", s)); err != nil {
			t.Fatalf("the store of %s: %v", s, err)
		}
	}
	if err := syscall.Kill(s1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		cs[0].Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: fmt.Sprint(i)})
	}
	for _, c := range cs {
		first := int64(0)
		for i := range n {
			m := c.Expect("message")
			if i == 0 {
				first = m.Seq
			}
			if m.Text != fmt.Sprint(i) || m.Seq != first+int64(i) {
				t.Fatalf("%s: message %d is %+v", c.Nick, i, m)
			}
		}
	}
	m := waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	if !strings.Contains(m, "\nparley_nats_publish_errors_total 0\n") {
		t.Fatalf("node 1 gave up messages:\n%s", m)
	}
	stopCluster(t, cmd)
}
