package natsbroker_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/chat/brokertest"
	"github.com/parleyhq/parley/chat/natsbroker"
)

// startNATS starts an embedded NATS server on a free port for the test.
func startNATS(t testing.TB) *natsbroker.Server {
	t.Helper()
	s, err := natsbroker.StartServer(natsbroker.ServerConfig{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newBroker(t testing.TB, url, node string) *natsbroker.Broker {
	t.Helper()
	b, err := natsbroker.New(natsbroker.Config{URL: url, Node: node, Heartbeat: 100 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSingle(t *testing.T) {
	brokertest.Single(t, newBroker(t, startNATS(t).URL(), "solo"))
}

func TestCluster(t *testing.T) {
	url := startNATS(t).URL()
	brokertest.Cluster(t, [3]chat.Broker{newBroker(t, url, "n1"), newBroker(t, url, "n2"), newBroker(t, url, "n3")})
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  natsbroker.Config
		want string
	}{
		{natsbroker.Config{}, "URL is required"},
		{natsbroker.Config{URL: "nats://x", Node: "Bad-Name"}, `Node "Bad-Name"`},
		{natsbroker.Config{URL: "nats://x", Prefix: "a.b"}, `Prefix "a.b"`},
		{natsbroker.Config{URL: "nats://x", HistorySize: -1}, "HistorySize (-1)"},
		{natsbroker.Config{URL: "nats://x", Heartbeat: time.Millisecond}, "Heartbeat (1ms)"},
	} {
		_, err := natsbroker.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	if _, err := natsbroker.New(natsbroker.Config{URL: "nats://127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("connecting to nothing: %v", err)
	}
}
