package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/wstest"
)

// TestMain lets the test binary run as parley itself, so end-to-end tests
// start the real command in a child process without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("PARLEY_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestParseServe(t *testing.T) {
	cfg, err := parseServe([]string{
		"--addr", "127.0.0.1:9000", "--allow-origin", "https://a.example", "--allow-origin", "https://b.example",
		"--max-connections", "500", "--max-message-size", "1024", "--heartbeat-interval", "off",
		"--heartbeat-timeout", "3s", "--close-timeout", "1s", "--handshake-timeout", "2s",
		"--send-queue-soft", "1000", "--send-queue-hard", "2000", "--slow-consumer-timeout", "4s",
		"--socket-write-buffer", "65536", "--flush-window", "off", "--pollers", "3", "--writers", "5", "--shutdown-timeout", "7s", "--log-level", "debug", "--log-format", "json",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Engine
	got := []any{e.Addr, strings.Join(e.AllowedOrigins, " "), e.MaxConnections, e.MaxMessageSize, e.HeartbeatInterval,
		e.HeartbeatTimeout, e.CloseTimeout, e.HandshakeTimeout, e.SendQueueSoftLimit, e.SendQueueHardLimit,
		e.SlowConsumerTimeout, e.SocketWriteBuffer, e.FlushWindow, e.Pollers, e.Writers, cfg.ShutdownTimeout, cfg.LogLevel.String(), cfg.LogFormat}
	want := []any{"127.0.0.1:9000", "https://a.example https://b.example", 500, 1024, time.Duration(-1),
		3 * time.Second, time.Second, 2 * time.Second, 1000, 2000,
		4 * time.Second, 65536, time.Duration(-1), 3, 5, 7 * time.Second, "DEBUG", "json"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d: got %v, want %v", i, got[i], want[i])
		}
	}

	def, err := parseServe(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if def.Engine.Addr != "localhost:1337" || def.Engine.HeartbeatInterval != engine.DefaultHeartbeatInterval {
		t.Errorf("defaults: addr %q heartbeat %v", def.Engine.Addr, def.Engine.HeartbeatInterval)
	}
}

func TestParseServeErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error, or "usage" for a flag-package error
	}{
		{[]string{"--addr", "nocolon"}, "Addr"},
		{[]string{"--send-queue-soft", "10", "--send-queue-hard", "5"}, "SendQueueSoftLimit (10) must not exceed SendQueueHardLimit (5)"},
		{[]string{"--allow-origin", "evil.example"}, "AllowedOrigins"},
		{[]string{"--max-connections", "-5"}, "MaxConnections (-5)"},
		{[]string{"--max-connections-per-addr", "-3"}, "MaxConnectionsPerAddr (-3)"},
		{[]string{"--tls-cert", "c.pem"}, "TLSCertFile (\"c.pem\") and TLSKeyFile (\"\") must be set together"},
		{[]string{"--max-bytes-per-second", "1000"}, "MaxBytesPerSecond (1000) must be at least MaxMessageSize"},
		{[]string{"--heartbeat-interval", "soon"}, "usage"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--data-dir", "d", "--nats", "nats://127.0.0.1:4222"}, "--data-dir and --nats"},
		{[]string{"--history-storage", "disk"}, `--history-storage "disk"`},
		{[]string{"--history-storage", "file"}, "--history-storage file needs --data-dir"},
		{[]string{"--history-storage", "memory", "--data-dir", "d"}, "--history-storage memory and --data-dir"},
		{[]string{"--history-max-age", "10ms"}, "HistoryMaxAge (10ms)"},
		{[]string{"--room-ttl", "1m"}, "--room-ttl: needs --nats"},
		{[]string{"--nats-max-store", "1000000"}, "--nats-max-store: only for a NATS this process embeds"},
		{[]string{"--data-dir", "d", "--nats-max-store", "0"}, "--nats-max-store 0"},
		{[]string{"--node", "a", "--nats-prefix", "p"}, "--nats-prefix, --node: needs --nats"},
		{[]string{"--nats", "nats://127.0.0.1:4222", "--room-ttl", "10ms"}, "RoomTTL (10ms)"},
		{[]string{"--notify-url", "http://127.0.0.1:9/hook"}, "--notify-url needs --notify-secret-file"},
		{[]string{"--notify-secret-file", "s"}, "--notify-secret-file needs --notify-url"},
		{[]string{"--notify-delay", "-1s"}, "NotifyDelay (-1s)"},
		{[]string{"--edit-window", "-2s"}, "EditWindow (-2s)"},
		{[]string{"--nosuchflag"}, "usage"},
		{[]string{"extra"}, "usage"},
	} {
		_, err := parseServe(tc.args, io.Discard)
		if err == nil {
			t.Errorf("%v: no error", tc.args)
			continue
		}
		if tc.want == "usage" {
			if !errors.Is(err, errUsage) {
				t.Errorf("%v: %v, want a usage error", tc.args, err)
			}
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %q does not name %q", tc.args, err, tc.want)
		}
	}
	if code := run([]string{"serve", "--nosuchflag"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("exit code for a bad flag: %d, want 2", code)
	}
	if code := run([]string{"frobnicate"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("exit code for an unknown command: %d, want 2", code)
	}
}

// loadTestFlags lift the per-address limits, as the README says to for a
// load test: its clients come from 16 loopback addresses.
var loadTestFlags = []string{"--max-connections-per-addr", "-1", "--connect-rate-per-addr", "-1"}

// startParley runs `parley serve` in a child process and returns it with its
// address, read from its log.
func startParley(t *testing.T, args ...string) (*exec.Cmd, string) {
	cmd, addr, _ := startParleyLog(t, args...)
	return cmd, addr
}

// startParleyLog is startParley that also returns the value of the first log
// line matching extra's regexp (its first group).
func startParleyLog(t *testing.T, args ...string) (*exec.Cmd, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	addr, metrics := runParley(t, cmd, nil)
	return cmd, addr, metrics
}

// runParley starts cmd, a `parley serve` (perhaps through a shell), and
// returns its address and its metrics address ("" if none), read from its
// log; watch, if set, sees every log line. The process is killed when the
// test ends.
func runParley(t *testing.T, cmd *exec.Cmd, watch func(line string)) (addr, metrics string) {
	t.Helper()
	cmd.Env = append(os.Environ(), "PARLEY_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addrRe := regexp.MustCompile(`msg=listening addr=(\S+)`)
	metricsRe := regexp.MustCompile(`msg=metrics addr=(\S+)`)
	found := make(chan string, 1)
	metricsAddr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := addrRe.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
			if m := metricsRe.FindStringSubmatch(sc.Text()); m != nil {
				metricsAddr <- m[1]
			}
			if watch != nil {
				watch(sc.Text())
			}
		}
	}()
	select {
	case addr := <-found:
		select {
		case m := <-metricsAddr:
			return addr, m
		default:
			return addr, ""
		}
	case <-time.After(20 * time.Second):
		t.Fatal("parley serve did not log its address within 20s")
	}
	return "", ""
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsListeners(t *testing.T) {
	_, addr := startParley(t)
	if code, body := get(t, "http://"+addr+"/metrics"); code != 200 || !strings.Contains(body, "parley_connections 0") ||
		!strings.Contains(body, "process_resident_memory_bytes") {
		t.Fatalf("/metrics on the main listener: %d", code)
	}
	// With --metrics-listen, /metrics moves there.
	_, addr, maddr := startParleyLog(t, "--metrics-listen", "127.0.0.1:0")
	if maddr == "" {
		t.Fatal("no metrics address logged")
	}
	if code, body := get(t, "http://"+maddr+"/metrics"); code != 200 || !strings.Contains(body, "parley_build_info") {
		t.Fatalf("/metrics on --metrics-listen: %d", code)
	}
	if code, _ := get(t, "http://"+addr+"/metrics"); code != 404 {
		t.Fatalf("/metrics on the main listener with --metrics-listen: %d, want 404", code)
	}
}

func TestServeEndToEnd(t *testing.T) {
	cmd, addr := startParley(t)

	resp, err := http.Get("http://" + addr + "/test")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "<h1>It works!</h1>" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/test: %q %q", resp.Header.Get("Content-Type"), body)
	}
	resp, err = http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `<script src="app.js"`) {
		t.Fatalf("/: %d, not the chat page", resp.StatusCode)
	}
	resp, err = http.Get("http://" + addr + "/app.js")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "new WebSocket(url)") ||
		resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Fatalf("/app.js: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hdr := http.Header{"Origin": {"http://" + addr}}
	a, _, err := wstest.Dial(ctx, "ws://"+addr+"/ws", hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, _, err := wstest.Dial(ctx, "ws://"+addr+"/ws", hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_ = a.SetDeadline(time.Now().Add(10 * time.Second))
	_ = b.SetDeadline(time.Now().Add(10 * time.Second))
	// Each gets its welcome, the lobby and its history first.
	for _, c := range []*wstest.Conn{a, b} {
		for _, want := range []string{`"type":"welcome"`, `"type":"join"`, `"type":"history"`} {
			if got, err := readSkippingPresence(c); err != nil || !strings.Contains(got, want) {
				t.Fatalf("got %q, %v; want %s", got, err, want)
			}
		}
	}
	// A plain-text message is said in the lobby and reaches everyone.
	if err := a.WriteText("hello"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wstest.Conn{a, b} {
		got, err := readSkippingPresence(c)
		if err != nil || !strings.Contains(got, `"type":"message"`) || !strings.Contains(got, `"text":"hello"`) {
			t.Fatalf("broadcast: %q, %v", got, err)
		}
	}
	if _, _, err := wstest.Dial(ctx, "ws://"+addr+"/ws", http.Header{"Origin": {"http://evil.example"}}); !errors.Is(err, wstest.ErrBadHandshake) {
		t.Fatalf("foreign origin: %v, want refused", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ce, err := b.ExpectClose()
	if err != nil || ce.Code != 1001 {
		t.Fatalf("after SIGTERM: %+v, %v; want close 1001", ce, err)
	}
	_ = b.WriteClose(1001, "")
	_ = a.WriteClose(1001, "")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("parley exited with %v, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("parley did not exit within 20s of SIGTERM")
	}
}

// readSkippingPresence reads the next text message that is not a presence
// notice.
func readSkippingPresence(c *wstest.Conn) (string, error) {
	for {
		got, err := c.ReadText()
		if err != nil || !strings.Contains(got, `"type":"presence"`) {
			return got, err
		}
	}
}

// TestOutOfFilesDropsIdleConnections: a server at its file limit (64 here)
// held by TCP connections that never upgrade drops the oldest of them to
// let a real client in, and logs the failing accepts at most once a
// second. Before, such connections held the server at its limit (6 of 12
// healthy clients could not connect) and every failed accept was logged
// (23,084 ERROR lines in 30 s).
func TestOutOfFilesDropsIdleConnections(t *testing.T) {
	cmd := exec.Command("sh", "-c", `ulimit -n 64 && exec "$0" "$@"`, os.Args[0], "serve", "--addr", "127.0.0.1:0",
		"--max-connections-per-addr", "-1", "--connect-rate-per-addr", "-1", "--handshake-timeout", "1m")
	var fullLogs atomic.Int64
	addr, _ := runParley(t, cmd, func(line string) {
		if strings.Contains(line, "out of file descriptors") {
			fullLogs.Add(1)
		}
	})
	// More idle connections than the server has descriptors.
	var idle []net.Conn
	for range 80 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
		defer c.Close()
	}
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for {
		// A patient client, as a browser is: the server makes room by
		// dropping idle connections that have had a second to upgrade.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, _, err := wstest.Dial(ctx, "ws://"+addr+"/ws", nil)
		cancel()
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a real client could not connect past idle connections: %v", err)
		}
	}
	// The oldest idle connections were the ones dropped.
	_ = idle[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle[0].Read(make([]byte, 1)); err == nil {
		t.Fatal("the oldest idle connection is still open")
	}
	if n, secs := fullLogs.Load(), time.Since(start).Seconds(); n > int64(secs)+2 {
		t.Fatalf("%d log lines about the file limit in %.1f s, want at most one a second", n, secs)
	}
	t.Logf("connected %v after 80 idle connections; %d log lines about the limit", time.Since(start).Round(time.Millisecond), fullLogs.Load())
}
