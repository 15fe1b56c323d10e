package loadtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/loadtest"
)

func TestMain(m *testing.M) { testserver.Main(m) }

func startServer(t *testing.T, cfg engine.Config) string {
	t.Helper()
	return startServerApp(t, cfg, engine.BaseApplication{})
}

func startServerApp(t *testing.T, cfg engine.Config, app engine.Application) string {
	t.Helper()
	_, url := testserver.Start(t, cfg, app)
	return url
}

func TestHold(t *testing.T) {
	url := startServer(t, engine.Config{})
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Targets: []string{url}, Clients: 500, Dialers: 16, Hold: 300 * time.Millisecond,
		Sources: "127.0.0.2-127.0.0.5", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 500 || res.Failed != 0 || res.OpenAtEnd != 500 || len(res.ClosedByServer) != 0 {
		t.Fatalf("result %+v", res)
	}
	if res.ConnectLatency.P50 <= 0 || res.ConnectLatency.Max < res.ConnectLatency.P99 || res.ClientRSSPerConn <= 0 ||
		res.ConnectLatency.Count != 500 {
		t.Fatalf("measurements missing: %+v", res)
	}
}

// relay broadcasts every text message to every client, as the seed chat does.
type relay struct {
	engine.BaseApplication
	ep *engine.Endpoint
}

func (a *relay) OnStart(ep *engine.Endpoint) error { a.ep = ep; return nil }
func (a *relay) OnMessage(_ engine.ClientID, typ engine.MessageType, data []byte) {
	_, _ = a.ep.Broadcast(typ, data)
}

// dropper relays like relay but drops every 7th message it receives.
type dropper struct {
	relay
	n int
}

func (a *dropper) OnMessage(_ engine.ClientID, typ engine.MessageType, data []byte) {
	a.n++
	if a.n%7 != 0 {
		_, _ = a.ep.Broadcast(typ, data)
	}
}

func TestBurstDeliversEverything(t *testing.T) {
	url := startServerApp(t, engine.Config{}, &relay{})
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioBurst, Targets: []string{url}, Clients: 300, Burst: 50, Rounds: 3,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 300 || res.Delivered != 3*300*50 || res.Missing != 0 || res.Duplicated != 0 ||
		res.OutOfOrder != 0 || len(res.Rounds) != 3 || res.EndToEnd.Count != 3*300*50 || res.DeliveriesPerSec <= 0 {
		t.Fatalf("result %+v", res)
	}
}

// The burst scenario must notice what a server loses: it is the check
// behind every "zero missing" the project reports.
func TestBurstCountsMissing(t *testing.T) {
	url := startServerApp(t, engine.Config{}, &dropper{})
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioBurst, Targets: []string{url}, Clients: 20, Burst: 70, Rounds: 1,
		RoundTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Seqs 6, 13, ..., 69 are dropped: 10 per client are missing; 9 of the
	// gaps are seen as a jump (the last drop is the burst's final message).
	if res.Missing != 20*10 || res.Delivered != 20*60 || res.OutOfOrder != 20*9 {
		t.Fatalf("missing %d delivered %d out of order %d; want 200, 1200, 180", res.Missing, res.Delivered, res.OutOfOrder)
	}
}

func TestFailuresByCause(t *testing.T) {
	// Every slot open to these idle guests, and none taken from them: the
	// run must meet 503s (engine's TestMakingRoom covers making room).
	url := startServer(t, engine.Config{MaxConnections: 50, ReservedConnections: -1, KeepSilentGuests: true})
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Targets: []string{url}, Clients: 80, Dialers: 4, Hold: 100 * time.Millisecond,
		Origin: "http://evil.example", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 0 || res.Failures["handshake status 403"] != 80 {
		t.Fatalf("foreign origin: %+v", res)
	}
	res, err = loadtest.Run(context.Background(), loadtest.Config{
		Targets: []string{url}, Clients: 80, Dialers: 1, Hold: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 50 || res.Failures["handshake status 503"] != 30 {
		t.Fatalf("over MaxConnections: %+v", res)
	}
}

func TestConfigRefusesNonLoopback(t *testing.T) {
	for _, tc := range []struct {
		cfg   loadtest.Config
		field string
		want  string // the reason, in the message
	}{
		{loadtest.Config{Targets: []string{"ws://10.0.0.1:80/ws"}}, "Targets", "only loopback"},
		{loadtest.Config{Targets: []string{"ws://example.com:80/ws"}}, "Targets", "only loopback"},
		{loadtest.Config{Targets: []string{"http://127.0.0.1:80/ws"}}, "Targets", "scheme must be ws"},
		{loadtest.Config{Targets: []string{"ws://127.0.0.1/ws"}}, "Targets", "needs a port"},
		{loadtest.Config{Sources: "10.0.0.1"}, "Sources", "loopback"},
		{loadtest.Config{Sources: "127.0.0.9-127.0.0.2"}, "Sources", "A <= B"},
		{loadtest.Config{Clients: -1}, "Clients", "must be positive"},
		{loadtest.Config{Hold: time.Minute, TimeLimit: time.Second}, "TimeLimit", "at least Hold"},
	} {
		err := tc.cfg.Validate()
		var ce *loadtest.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, loadtest.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want a ConfigError for %s saying %q", tc.cfg, err, tc.field, tc.want)
		}
	}
	if err := (&loadtest.Config{Targets: []string{"ws://[::1]:1/ws", "ws://localhost:1/x"}}).Validate(); err != nil {
		t.Errorf("loopback targets refused: %v", err)
	}
}

func TestReportFiles(t *testing.T) {
	url := startServer(t, engine.Config{})
	// This process stands in for the server whose memory and CPU are
	// charted.
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Targets: []string{url}, Clients: 50, Hold: 2100 * time.Millisecond, ServerPIDs: []int{os.Getpid()},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	res.Command, res.Revision = []string{"parley", "loadtest", "--clients", "50"}, "v-test"
	var html, text strings.Builder
	if err := res.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	res.WriteText(&text)
	h := html.String()
	// Connections, received, latency (2 lines), server memory and CPU; the
	// ramp when the connecting took more than one sample; latency bars.
	lines := strings.Count(h, "<polyline")
	if !strings.Contains(h, "<svg") || lines < 6 || !strings.Contains(h, "passed") ||
		strings.Contains(h, "http://") || strings.Contains(h, "https://") || strings.Contains(h, "<script") {
		t.Fatalf("HTML report: %d bytes, %d chart lines", len(h), lines)
	}
	for _, want := range []string{`<table class="head">`, "<th>connected</th>", "parley loadtest --clients 50", "v-test",
		res.StartedAt, "seconds since the start", "Server resident memory", "Server CPU"} {
		if !strings.Contains(h, want) {
			t.Errorf("the HTML report lacks %q", want)
		}
	}
	if len(res.Ramp) == 0 || res.Ramp[len(res.Ramp)-1].Open != 50 || res.Series[1].ServerRSS <= 0 {
		t.Fatalf("ramp %v, series %+v", res.Ramp, res.Series)
	}
	if !strings.Contains(text.String(), "connected   50") || !strings.Contains(text.String(), "verdict     passed") {
		t.Fatalf("text report:\n%s", text.String())
	}
	b, err := json.Marshal(res)
	if err != nil || !strings.Contains(string(b), `"series":[{`) {
		t.Fatalf("JSON report: %s %v", b, err)
	}
}

func TestRamp(t *testing.T) {
	url := startServer(t, engine.Config{})
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Targets: []string{url}, Clients: 100, Ramp: 200, Hold: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	// 100 clients at 200 per second take half a second, not milliseconds.
	if res.Connected != 100 || res.ConnectSeconds < 0.45 || res.ConnectSeconds > 5 {
		t.Fatalf("connected %d in %.2fs at a ramp of 200/s", res.Connected, res.ConnectSeconds)
	}
}

// TestTokens: with TokenSecretFile each client connects as its own user,
// to a server that admits users only.
func TestTokens(t *testing.T) {
	is := authtest.New(t)
	hub, err := chat.New(chat.Config{Verifier: is.Verifier(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	_, url := testserver.Start(t, engine.Config{}, hub)
	cfg := loadtest.Config{Targets: []string{url}, Clients: 50, Hold: 100 * time.Millisecond,
		Sources: "127.0.0.2", Logger: slog.New(slog.DiscardHandler)}
	res, err := loadtest.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 0 || res.Failures["handshake status 401"] != 50 {
		t.Fatalf("without tokens: %+v", res)
	}
	cfg.TokenSecretFile, cfg.TokenAudience = is.SecretFile, authtest.Audience
	if res, err = loadtest.Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if res.Connected != 50 || res.Failed != 0 {
		t.Fatalf("with tokens: %+v", res)
	}
	if st := hub.Stats(); st.Refused[chat.RefusedTokenMissing] != 50 {
		t.Fatalf("refusals %v", st.Refused)
	}
}

// lateRelay relays like relay, in order, but each message only after a
// delay.
type lateRelay struct {
	engine.BaseApplication
	ep    *engine.Endpoint
	delay time.Duration
	queue chan lateMsg
}

type lateMsg struct {
	due  time.Time
	data []byte
}

func (a *lateRelay) OnStart(ep *engine.Endpoint) error {
	a.ep, a.queue = ep, make(chan lateMsg, 1024)
	go func() {
		for m := range a.queue {
			time.Sleep(time.Until(m.due))
			_, _ = a.ep.Broadcast(engine.Text, m.data)
		}
	}()
	return nil
}

func (a *lateRelay) OnMessage(_ engine.ClientID, _ engine.MessageType, data []byte) {
	a.queue <- lateMsg{time.Now().Add(a.delay), append([]byte(nil), data...)}
}

func (a *lateRelay) OnStop() { close(a.queue) }

// TestBurstCountsLate: deliveries that come after their round's timeout
// are late, not missing (make compare once reported a slow server's late
// messages as lost).
func TestBurstCountsLate(t *testing.T) {
	url := startServerApp(t, engine.Config{}, &lateRelay{delay: 400 * time.Millisecond})
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioBurst, Targets: []string{url}, Clients: 10, Burst: 5, Rounds: 2,
		RoundTimeout: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Late != 2*10*5 || res.Missing != 0 || res.Delivered != 0 || res.Duplicated != 0 {
		t.Fatalf("late %d missing %d in time %d duplicated %d; want 100, 0, 0, 0", res.Late, res.Missing, res.Delivered, res.Duplicated)
	}
}

// TestSiege: besiegers hold slots and come back when dropped; against a
// full server the newest take the oldest silent ones' slots (1013), and
// never-upgraded sockets are dropped after the handshake timeout.
func TestSiege(t *testing.T) {
	srv, url := testserver.Start(t, engine.Config{MaxConnections: 10, ReservedConnections: -1, HandshakeTimeout: 300 * time.Millisecond},
		engine.BaseApplication{})
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioSiege, Targets: []string{url}, Clients: 14, IdleSockets: 3, Duration: 2 * time.Second,
		Sources: "127.0.0.2-127.0.0.3,127.1.0.2", Dialers: 4, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	sg := res.Siege
	if sg == nil || sg.Sources != 3 || sg.Upgrades < 14 || sg.ClosedByServer["closed by server with 1013"] == 0 ||
		sg.SocketsOpened < 4 || sg.SocketsDropped == 0 {
		t.Fatalf("siege: %+v", sg)
	}
	if st := srv.Stats(); st.EvictedSilent == 0 {
		t.Fatalf("server: %+v", st)
	}
}
