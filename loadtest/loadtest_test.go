package loadtest_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lesismal/nbio/logging"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/loadtest"
)

func TestMain(m *testing.M) {
	if os.Getenv("PARLEY_TEST_LOG") == "" {
		logging.SetLevel(logging.LevelNone)
	}
	os.Exit(m.Run())
}

func startServer(t *testing.T, cfg engine.Config) string {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Mount("/ws", engine.BaseApplication{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return "ws://" + srv.Addr().String() + "/ws"
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
	if res.ConnectLatency.P50 <= 0 || res.ConnectLatency.Max < res.ConnectLatency.P99 || res.ClientRSSPerConn <= 0 {
		t.Fatalf("measurements missing: %+v", res)
	}
}

func TestFailuresByCause(t *testing.T) {
	url := startServer(t, engine.Config{MaxConnections: 50})
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
		cfg  loadtest.Config
		want string
	}{
		{loadtest.Config{Targets: []string{"ws://10.0.0.1:80/ws"}}, "only loopback"},
		{loadtest.Config{Targets: []string{"ws://example.com:80/ws"}}, "only loopback"},
		{loadtest.Config{Targets: []string{"http://127.0.0.1:80/ws"}}, "scheme must be ws"},
		{loadtest.Config{Targets: []string{"ws://127.0.0.1/ws"}}, "needs a port"},
		{loadtest.Config{Sources: "10.0.0.1"}, "Sources"},
		{loadtest.Config{Sources: "127.0.0.9-127.0.0.2"}, "A <= B"},
		{loadtest.Config{Clients: -1}, "Clients (-1)"},
		{loadtest.Config{Hold: time.Minute, TimeLimit: time.Second}, "TimeLimit (1s) must be at least Hold (1m0s)"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
	if err := (&loadtest.Config{Targets: []string{"ws://[::1]:1/ws", "ws://localhost:1/x"}}).Validate(); err != nil {
		t.Errorf("loopback targets refused: %v", err)
	}
}
