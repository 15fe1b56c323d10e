// Package testserver starts real Parley servers for tests: an
// engine.Server on 127.0.0.1:0 with an application on /ws, quiet unless
// PARLEY_TEST_LOG is set, shut down when the test ends.
package testserver

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/lesismal/nbio/logging"
	"github.com/parleyhq/parley/engine"
)

// Main runs a package's tests with nbio's package-level logger quiet
// (unless PARLEY_TEST_LOG is set). Call it from TestMain.
func Main(m *testing.M) {
	if os.Getenv("PARLEY_TEST_LOG") == "" {
		logging.SetLevel(logging.LevelNone)
	}
	os.Exit(m.Run())
}

// Logger returns a logger that discards, or writes debug logs to stderr
// when PARLEY_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("PARLEY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Start runs a server for cfg (Addr and Logger are set here unless given)
// with app mounted on /ws, after running setup on it, and returns it with
// its ws:// URL. The server is shut down when the test ends. Unless cfg
// sets them, the per-address connection limits are off: a test's
// thousands of clients all come from 127.0.0.1.
func Start(t testing.TB, cfg engine.Config, app engine.Application, setup ...func(*engine.Server)) (*engine.Server, string) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger()
	}
	if cfg.MaxConnectionsPerAddr == 0 {
		cfg.MaxConnectionsPerAddr = -1
	}
	if cfg.ConnectRatePerAddr == 0 {
		cfg.ConnectRatePerAddr = -1
	}
	srv, err := engine.New(cfg)
	if err != nil {
		t.Fatalf("testserver: New: %v", err)
	}
	if app != nil {
		if _, err := srv.Mount("/ws", app); err != nil {
			t.Fatalf("testserver: Mount: %v", err)
		}
	}
	for _, f := range setup {
		f(srv)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("testserver: Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv, "ws://" + srv.Addr().String() + "/ws"
}
