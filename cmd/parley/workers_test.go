package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/loadtest"
)

// TestLoadtestWorkers runs the chat scenario over three worker processes
// (this test binary, as `parley loadtest-worker`) and checks the merged
// result accounts for every client and every message.
func TestLoadtestWorkers(t *testing.T) {
	quiet := testserver.Logger()
	hub, err := chat.New(chat.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	_, url := testserver.Start(t, engine.Config{}, hub)
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioChat, Targets: []string{url},
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
	// Derived figures are of the merged counts, not left at zero.
	if want := float64(res.WireBytesIn) / float64(res.MessagesReceived); res.MessagesReceived == 0 || res.WireBytesPerMsg != want {
		t.Fatalf("wire bytes per message %.1f, want %.1f (%d bytes, %d messages)", res.WireBytesPerMsg, want, res.WireBytesIn, res.MessagesReceived)
	}
}

// TestLoadtestSmoke is CI's load-test smoke: 300 chat clients against the
// real server for 3 s, through the command line; any lost, duplicated or
// misrouted message fails it (the command's exit code).
func TestLoadtestSmoke(t *testing.T) {
	_, addr := startParley(t, loadTestFlags...)
	out := t.TempDir()
	var stdout, stderr strings.Builder
	code := run([]string{"loadtest", "--scenario", "chat", "--target", "ws://" + addr + "/ws", "--clients", "300",
		"--room-size", "50", "--rate", "2", "--duration", "3s", "--metrics-url", "http://" + addr + "/metrics",
		"--json", filepath.Join(out, "r.json"), "--html", filepath.Join(out, "r.html")}, &stdout, &stderr)
	t.Log("\n" + stdout.String())
	if code != 0 {
		t.Fatalf("parley loadtest exited %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res loadtest.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Connected != 300 || res.Delivered == 0 || res.Delivered != res.Expected || res.Missing != 0 ||
		res.ServerRSSBytes == 0 || res.ServerCPUSeconds <= 0 {
		t.Fatalf("result %+v", res)
	}
	if h, err := os.ReadFile(filepath.Join(out, "r.html")); err != nil || !strings.Contains(string(h), "<svg") {
		t.Fatalf("HTML report: %v", err)
	}
}
