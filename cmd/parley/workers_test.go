package main

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/loadtest"
)

// TestLoadtestWorkers runs the chat scenario over three worker processes
// (this test binary, as `parley loadtest-worker`) and checks the merged
// result accounts for every client and every message.
func TestLoadtestWorkers(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	hub, err := chat.New(chat.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := engine.New(engine.Config{Addr: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Mount("/ws", hub); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioChat, Targets: []string{"ws://" + srv.Addr().String() + "/ws"},
		Clients: 600, RoomSize: 50, Rate: 2, Duration: 2 * time.Second, Workers: 3,
		WorkerCommand: []string{os.Args[0], "loadtest-worker"}, WorkerEnv: []string{"PARLEY_TEST_MAIN=1"},
		Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d workers: %d connected, delivered %d of %d, p99 %.1fms, client RSS %.0f B/conn",
		res.Workers, res.Connected, res.Delivered, res.Expected, res.EndToEnd.P99, res.ClientRSSPerConn)
	if res.Workers != 3 || res.Connected != 600 || res.Joined != 600 || res.Expected != res.MessagesSent*50 ||
		res.Delivered != res.Expected || res.Missing != 0 || res.Stray != 0 || !res.Passed ||
		res.EndToEnd.Count != uint64(res.Delivered) || res.ConnectLatency.Count != 600 || len(res.Series) == 0 {
		t.Fatalf("merged result %+v", res)
	}
}
