package loadtest_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/loadtest"
)

func startChatServer(t *testing.T) string {
	t.Helper()
	hub, err := chat.New(chat.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return startServerApp(t, engine.Config{}, hub)
}

// TestChatScenario: every message said in a room reaches every member of
// that room once, in order, and no other room.
func TestChatScenario(t *testing.T) {
	url := startChatServer(t)
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioChat, Targets: []string{url}, Clients: 300, RoomSize: 50, Rate: 4,
		Duration: 2 * time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sent %d, delivered %d of %d, %.0f deliveries/s, p99 %.1fms", res.MessagesSent, res.Delivered,
		res.Expected, res.DeliveriesPerSec, res.EndToEnd.P99)
	if res.Joined != 300 || res.MessagesSent < 300*4 || res.Expected != res.MessagesSent*50 ||
		res.Delivered != res.Expected || res.Missing != 0 || res.Duplicated != 0 || res.Stray != 0 ||
		!res.Passed || len(res.Series) < 2 {
		t.Fatalf("result %+v", res)
	}
}

// TestRefusedJoinsFail: a server that refuses most joins (its room
// budget) leaves a lighter load than the one asked for; the run says so
// and fails instead of passing with that load's figures (the 100k chat
// once "passed" with 4,141 of 100,000 clients in their rooms).
func TestRefusedJoinsFail(t *testing.T) {
	hub, err := chat.New(chat.Config{RoomCreateRate: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	url := startServerApp(t, engine.Config{}, hub)
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioChat, Targets: []string{url}, Clients: 40, RoomSize: 10, Rate: 1,
		Duration: 500 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.JoinsAsked != 40 || res.Joined >= 40 || res.Passed || !strings.Contains(res.Verdict, "clients joined their rooms") ||
		!strings.Contains(res.JoinRefusal, `"code":"rate_limited"`) {
		t.Fatalf("joined %d of %d, verdict %q", res.Joined, res.JoinsAsked, res.Verdict)
	}
}

// TestChurnScenario: clients come and go while the others chat; nothing
// the chatters are owed goes missing.
func TestChurnScenario(t *testing.T) {
	url := startChatServer(t)
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioChurn, Targets: []string{url}, Clients: 200, RoomSize: 40, Rate: 2,
		ChurnFraction: 0.25, ChurnRate: 40, Duration: 2 * time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("churned %d (failed %d), delivered %d of %d", res.ChurnCycles, res.ChurnFailures, res.Delivered, res.Expected)
	if res.ChurnCycles < 40 || res.ChurnFailures != 0 || res.Missing != 0 || res.Delivered == 0 || !res.Passed {
		t.Fatalf("result %+v", res)
	}
}

// A threshold that is not met fails the run.
func TestThresholds(t *testing.T) {
	srv, url := testserver.Start(t, engine.Config{MaxConnections: 10, ReservedConnections: -1, KeepSilentGuests: true}, engine.BaseApplication{})
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Targets: []string{url}, Clients: 12, Hold: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Passed || res.Errors != 2 {
		t.Fatalf("2 refused connections with MaxErrors 0: passed %v, errors %d (%s)", res.Passed, res.Errors, res.Verdict)
	}
	// The first run's clients must be gone before the second takes slots.
	poll.Until(t, "the first run's clients gone", func() bool { return srv.Stats().Clients == 0 })
	res, _ = loadtest.Run(context.Background(), loadtest.Config{
		Targets: []string{url}, Clients: 12, Hold: 100 * time.Millisecond, MaxErrors: 2, Logger: slog.New(slog.DiscardHandler),
	})
	if !res.Passed {
		t.Fatalf("MaxErrors 2: %s", res.Verdict)
	}
}

// TestChatOverTLS: the chat scenario over wss://, the certificate verified
// against a CA file; without it, every connection fails verification.
func TestChatOverTLS(t *testing.T) {
	certFile, keyFile, caFile, _ := testserver.SelfSigned(t)
	hub, err := chat.New(chat.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	_, url := testserver.Start(t, engine.Config{TLSCertFile: certFile, TLSKeyFile: keyFile}, hub)
	wss := strings.Replace(url, "ws://", "wss://", 1)
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioChat, Targets: []string{wss}, TLSCAFile: caFile, Clients: 100, RoomSize: 25,
		Rate: 4, Duration: time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 100 || res.Delivered == 0 || res.Delivered != res.Expected || !res.Passed {
		t.Fatalf("over wss: %+v", res)
	}
	res, err = loadtest.Run(context.Background(), loadtest.Config{
		Targets: []string{wss}, Clients: 5, Hold: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 0 || res.Failed != 5 {
		t.Fatalf("an untrusted certificate was accepted: %+v", res.Failures)
	}
}

// TestFloodScenario: two flooders sending everything a client can send, as
// fast as they can, against a chat server on its default limits: the
// server closes them (and again when they come back) while the healthy
// clients' chat loses nothing.
func TestFloodScenario(t *testing.T) {
	hub, err := chat.New(chat.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// A short CloseTimeout: a closed flooder is no longer read, and is
	// dropped when it runs out, so it comes back within the run.
	srv, url := testserver.Start(t, engine.Config{MaxConnectionsPerAddr: engine.DefaultMaxConnectionsPerAddr,
		ConnectRatePerAddr: engine.DefaultConnectRatePerAddr, CloseTimeout: 200 * time.Millisecond}, hub)
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioFlood, Targets: []string{url}, Clients: 60, RoomSize: 10, Rate: 1,
		Duration: 3 * time.Second, Flooders: 2, FloodKind: loadtest.FloodMixed, FloodSize: 20000,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := res.Flood
	t.Logf("healthy: delivered %d of %d, p99 %.1fms; flood: %+v; server closed for rate %d", res.Delivered, res.Expected,
		res.EndToEnd.P99, *f, srv.Stats().RateLimited)
	if f == nil || f.Frames == 0 || f.Connects < 4 || f.ClosedByServer < 2 {
		t.Fatalf("flood %+v", f)
	}
	if res.Delivered != res.Expected || res.Missing != 0 || res.Duplicated != 0 || res.OpenAtEnd != 60 || !res.Passed {
		t.Fatalf("the healthy clients: %+v", res)
	}
}

// TestChatCompressed: with permessage-deflate agreed, every message still
// reaches every member once, in order, and fewer bytes cross the wire
// than without it.
func TestChatCompressed(t *testing.T) {
	hub, err := chat.New(chat.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	url := startServerApp(t, engine.Config{Compression: true, CompressionThreshold: -1}, hub)
	run := func(compression bool) *loadtest.Result {
		res, err := loadtest.Run(context.Background(), loadtest.Config{
			Scenario: loadtest.ScenarioChat, Targets: []string{url}, Clients: 100, RoomSize: 50, Rate: 4,
			Duration: time.Second, Compression: compression, Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Delivered != res.Expected || res.Missing != 0 || res.Duplicated != 0 || res.ProtocolErrors != 0 || !res.Passed {
			t.Fatalf("compression %v: result %+v", compression, res)
		}
		return res
	}
	plain, z := run(false), run(true)
	t.Logf("wire bytes per message: %.0f plain, %.0f compressed", plain.WireBytesPerMsg, z.WireBytesPerMsg)
	if z.DeflateClients != 100 || z.CompressedIn == 0 || plain.DeflateClients != 0 || z.WireBytesPerMsg >= plain.WireBytesPerMsg {
		t.Fatalf("deflate clients %d, compressed %d, wire bytes per message %.0f vs %.0f plain",
			z.DeflateClients, z.CompressedIn, z.WireBytesPerMsg, plain.WireBytesPerMsg)
	}
}

// flakyBroker is a MemoryBroker that answers every fifth publish with an
// error, as a cluster's broker does past its publish timeout.
type flakyBroker struct {
	*chat.MemoryBroker
	n atomic.Int64
}

func (b *flakyBroker) Publish(room string, msg []byte, id string, done func(error)) {
	if b.n.Add(1)%5 == 0 {
		done(errors.New("NATS did not store it"))
		return
	}
	b.MemoryBroker.Publish(room, msg, id, done)
}

// TestNotDeliveredRetried: a message the server answers not_delivered is
// said again under its id, counted, and reaches every member once.
func TestNotDeliveredRetried(t *testing.T) {
	hub, err := chat.New(chat.Config{Broker: &flakyBroker{MemoryBroker: chat.NewMemoryBroker()}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	url := startServerApp(t, engine.Config{}, hub)
	res, err := loadtest.Run(context.Background(), loadtest.Config{
		Scenario: loadtest.ScenarioChat, Targets: []string{url}, Clients: 40, RoomSize: 10, Rate: 4,
		Duration: time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Retried == 0 || res.Missing != 0 || res.Duplicated != 0 || res.Delivered != res.Expected || !res.Passed {
		t.Fatalf("retried %d, delivered %d of %d, missing %d, duplicated %d: %s", res.Retried, res.Delivered, res.Expected, res.Missing, res.Duplicated, res.Verdict)
	}
}
