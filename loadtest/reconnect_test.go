package loadtest_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/chat/natsbroker"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/loadtest"
)

// TestReconnectResumes: two nodes share rooms through NATS; one stops
// mid-chat. Its clients reconnect to the other and rejoin from the last
// sequence number they saw: every message still reaches every member once,
// in order.
func TestReconnectResumes(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	ns, err := natsbroker.StartServer(natsbroker.ServerConfig{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Token: testToken, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	var srvs []*engine.Server
	var urls []string
	for _, name := range []string{"n1", "n2"} {
		b, err := natsbroker.New(natsbroker.Config{URL: ns.URL(), Node: name, Token: testToken, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		// The rooms here say 200 messages a second (about 36 KB/s): the
		// default 64 KiB of history holds under 2 s of them, and beside two
		// busy loops a reconnection once took 4.3 s (p99): the history no
		// longer held what the client missed (a gap, 280 counted missing).
		// What is tested is the resumption, so the history holds 28 s.
		hub, err := chat.New(chat.Config{Broker: b, RateLimit: -1, HistoryBytes: 1 << 20, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		srv, url := testserver.Start(t, engine.Config{}, hub)
		srvs, urls = append(srvs, srv), append(urls, url)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-ctx.Done():
			return
		}
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		_ = srvs[1].Shutdown(sctx) // clients get 1001 and come back on n1
	}()
	res, err := loadtest.Run(ctx, loadtest.Config{
		Scenario: loadtest.ScenarioChat, Targets: urls, Clients: 400, RoomSize: 100, Rate: 2,
		Duration: 3 * time.Second, Reconnect: true, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sent %d, delivered %d of %d; %d reconnected (%d resumed, %d messages resent), close to rejoin p99 %.1fms",
		res.MessagesSent, res.Delivered, res.Expected, res.Reconnects, res.Resumed, res.Resent, res.ReconnectLatency.P99)
	if res.Reconnects != 200 || res.Resumed != 200 || res.OpenAtEnd != 400 || res.Missing != 0 ||
		res.Duplicated != 0 || res.OutOfOrder != 0 || res.Delivered != res.Expected || len(res.ClosedByServer) != 0 || !res.Passed {
		t.Fatalf("result %+v", res)
	}
}

// testToken is the embedded NATS server's secret in these tests.
const testToken = "parley-test-token-0123456789"
