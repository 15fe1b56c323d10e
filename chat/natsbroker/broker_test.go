package natsbroker_test

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/chat/brokertest"
	"github.com/parleyhq/parley/chat/natsbroker"
)

// startNATS starts an embedded NATS server on a free port for the test.
func startNATS(t testing.TB) *natsbroker.Server {
	t.Helper()
	s, err := natsbroker.StartServer(natsbroker.ServerConfig{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Token: testToken, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newBroker(t testing.TB, url, node string) *natsbroker.Broker {
	t.Helper()
	b, err := natsbroker.New(natsbroker.Config{URL: url, Node: node, Token: testToken, Heartbeat: 100 * time.Millisecond, Logger: quiet()})
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

// countingHandler counts room messages and signals when it has n.
type countingHandler struct {
	brokertest.Handler
	got  atomic.Int64
	want int64
	done chan struct{}
}

func (h *countingHandler) HandleMessage(string, int64, []byte) {
	if h.got.Add(1) == h.want {
		close(h.done)
	}
}

// BenchmarkPublish: room messages through NATS to three nodes (one of them
// the publisher), as a cluster carries them: an asynchronous JetStream
// publish, the stream's republish, one delivery per node.
func BenchmarkPublish(b *testing.B) {
	url := startNATS(b).URL()
	msg := []byte(`{"from":"guest-n1-1","text":"0 0 1764000000000000000","ts":1764000000000}`)
	var hs []*countingHandler
	var brokers []*natsbroker.Broker
	for _, name := range []string{"n1", "n2", "n3"} {
		br := newBroker(b, url, name)
		h := &countingHandler{want: int64(b.N), done: make(chan struct{})}
		if err := br.Run(h); err != nil {
			b.Fatal(err)
		}
		if _, err := br.Subscribe("bench"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { br.Close() })
		hs, brokers = append(hs, h), append(brokers, br)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		brokers[0].Publish("bench", msg, "", nil)
	}
	for _, h := range hs {
		select {
		case <-h.done:
		case <-time.After(60 * time.Second):
			b.Fatalf("%d of %d messages arrived", h.got.Load(), b.N)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	b.ReportMetric(float64(3*b.N)/time.Since(start).Seconds(), "node-deliveries/s")
}

// TestPublishAfterClose: a closed broker refuses at once, and says so.
func TestPublishAfterClose(t *testing.T) {
	b := newBroker(t, startNATS(t).URL(), "n1")
	if err := b.Run(brokertest.NewHandler()); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	b.Publish("r", []byte(`{}`), "", func(err error) { errc <- err })
	select {
	case err := <-errc:
		if !errors.Is(err, chat.ErrBrokerNotRunning) {
			t.Fatalf("Publish after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Publish after Close never called done")
	}
}

// TestStartServerAddressTaken: an embedded NATS whose address is taken
// says so at once.
func TestStartServerAddressTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	began := time.Now()
	_, err = natsbroker.StartServer(natsbroker.ServerConfig{Addr: l.Addr().String(), StoreDir: t.TempDir(), Token: testToken, Logger: quiet()})
	if err == nil || !strings.Contains(err.Error(), "address already in use") || time.Since(began) > 5*time.Second {
		t.Fatalf("StartServer on a taken address: %v after %v", err, time.Since(began))
	}
}

// testToken is the embedded NATS servers' secret in these tests.
const testToken = "parley-test-token-0123456789"
