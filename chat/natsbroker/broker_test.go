package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/chat/brokertest"
	"github.com/parleyhq/parley/chat/natsbroker"
	"github.com/parleyhq/parley/internal/poll"
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
	brokertest.Cluster(t, [3]brokertest.Broker{newBroker(t, url, "n1"), newBroker(t, url, "n2"), newBroker(t, url, "n3")})
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg   natsbroker.Config
		field string
	}{
		{natsbroker.Config{}, "URL"},
		{natsbroker.Config{URL: "nats://x", Node: "Bad-Name"}, "Node"},
		{natsbroker.Config{URL: "nats://x", Prefix: "a.b"}, "Prefix"},
		{natsbroker.Config{URL: "nats://x", HistorySize: -1}, "HistorySize"},
		{natsbroker.Config{URL: "nats://x", Heartbeat: time.Millisecond}, "Heartbeat"},
		{natsbroker.Config{URL: "nats://x", RoomTTL: time.Millisecond}, "RoomTTL"},
		{natsbroker.Config{URL: "nats://x", HistoryMaxAge: -time.Second}, "HistoryMaxAge"},
		{natsbroker.Config{URL: "nats://x", User: "u"}, "User"},
		{natsbroker.Config{URL: "nats://x", Token: "t", CredsFile: "c"}, "Token"},
	} {
		_, err := natsbroker.New(tc.cfg)
		var ce *natsbroker.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, natsbroker.ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want a ConfigError for %s", tc.cfg, err, tc.field)
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
		if _, err := br.Subscribe(context.Background(), "bench"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { br.Close(context.Background()) })
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
	if err := b.Close(context.Background()); err != nil {
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

// TestStreamsFollowRooms: 1,000 rooms opened (a message each) and let go
// by one node leave NATS, once RoomTTL has passed, with the streams and
// the memory it had before they were made; the rooms another node keeps
// open keep their streams and history.
func TestStreamsFollowRooms(t *testing.T) {
	ns := startNATS(t)
	const ttl = 300 * time.Millisecond
	brokers := make([]*natsbroker.Broker, 2)
	for i := range brokers {
		b, err := natsbroker.New(natsbroker.Config{URL: ns.URL(), Node: fmt.Sprintf("n%d", i+1), Token: testToken,
			Heartbeat: 100 * time.Millisecond, RoomTTL: ttl, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Run(brokertest.NewHandler()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close(context.Background()) })
		brokers[i] = b
	}
	_, js, _ := busClient(t, ns.URL())
	usage := func() jetstream.Tier {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ai, err := js.AccountInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ai.Tier
	}
	publish := func(b *natsbroker.Broker, room string) {
		t.Helper()
		done := make(chan error, 1)
		b.Publish(room, []byte(`{"from":"x","text":"hello","ts":1}`), "", func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	heap := func() uint64 { // live heap bytes, as the last GC marked them
		runtime.GC()
		runtime.GC() // what sync.Pools held goes on the second
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	// Node 2 keeps ten rooms open, with a message each.
	for i := range 10 {
		room := fmt.Sprintf("kept%d", i)
		if _, err := brokers[1].Subscribe(context.Background(), room); err != nil {
			t.Fatal(err)
		}
		publish(brokers[1], room)
	}
	before, heapBefore := usage(), heap()
	const rooms = 1000
	for i := range rooms {
		room := fmt.Sprintf("gone%d", i)
		if _, err := brokers[0].Subscribe(context.Background(), room); err != nil {
			t.Fatal(err)
		}
		publish(brokers[0], room)
	}
	// Node 1 also opens node 2's rooms, then lets everything go.
	for i := range 10 {
		if _, err := brokers[0].Subscribe(context.Background(), fmt.Sprintf("kept%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	full, heapFull := usage(), heap()
	if full.Streams != before.Streams+rooms || full.Memory <= before.Memory {
		t.Fatalf("with the rooms made: %+v, before %+v", full, before)
	}
	for i := range rooms {
		_ = brokers[0].Unsubscribe(fmt.Sprintf("gone%d", i))
	}
	for i := range 10 {
		_ = brokers[0].Unsubscribe(fmt.Sprintf("kept%d", i))
	}
	let := time.Now()
	poll.Until(t, "the abandoned rooms' streams to go", func() bool {
		u := usage()
		return u.Streams == before.Streams && u.Memory <= before.Memory
	})
	after, heapAfter := usage(), heap()
	if gone := time.Since(let); gone < ttl {
		t.Fatalf("streams deleted %v after their rooms were let go, before RoomTTL (%v)", gone, ttl)
	}
	t.Logf("JetStream memory: %d B with 10 rooms, %d B with 1,010, %d B after the TTL; streams %d, %d, %d",
		before.Memory, full.Memory, after.Memory, before.Streams, full.Streams, after.Streams)
	if after.Memory != before.Memory {
		t.Fatalf("memory after the TTL %d B, before the rooms were made %d B", after.Memory, before.Memory)
	}
	// NATS runs in this process: its streams' own structures show in the
	// heap (nodes and NATS together here).
	t.Logf("live Go heap (NATS and two nodes): %.1f MB, %.1f MB with the rooms, %.1f MB after the TTL",
		float64(heapBefore)/1e6, float64(heapFull)/1e6, float64(heapAfter)/1e6)
	if grown := int64(heapAfter) - int64(heapBefore); grown > int64(heapFull-heapBefore)*15/100 {
		t.Fatalf("the heap kept %d B of the %d B the rooms took", grown, heapFull-heapBefore)
	}
	// The kept rooms still have their history.
	st, err := brokers[0].Subscribe(context.Background(), "kept3")
	if err != nil || st.Seq != 1 || len(st.Messages) != 1 {
		t.Fatalf("a kept room after the sweep: %+v, %v", st, err)
	}
	// The janitor is the live node with the smallest name: node 1, unless
	// it stalled long enough (a starved CPU) for node 2 to take a sweep.
	// Each stream is deleted once, by one of them.
	if n1, n2 := brokers[0].Stats().StreamsDeleted, brokers[1].Stats().StreamsDeleted; n1+n2 != rooms || n1 == 0 {
		t.Fatalf("node 1 (the janitor) deleted %d streams and node 2 %d, want %d in all", n1, n2, rooms)
	}
}

// TestByeIsLast: a node that closes says nothing after its bye. A heartbeat
// after it made the others take the node for alive again, and its nicks for
// held, until three heartbeats had passed. The hook holds the closing node
// right after its bye for up to 20 heartbeats, long enough for any heartbeat
// that could still follow it to be published.
func TestByeIsLast(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	nc, err := nats.Connect(s.URL(), nats.Token(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	beats := make(chan *nats.Msg, 1<<16)
	if _, err := nc.ChanSubscribe(natsbroker.DefaultPrefix+".nodes", beats); err != nil {
		t.Fatal(err)
	}
	const heartbeat = 10 * time.Millisecond
	b, err := natsbroker.New(natsbroker.Config{URL: s.URL(), Node: "leaving", Token: testToken, Heartbeat: heartbeat, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	var said atomic.Bool // the bye
	later := make(chan struct{}, 1)
	natsbroker.SetBeatHook(b, func(bye bool) {
		switch {
		case bye:
			said.Store(true)
			select {
			case <-later:
			case <-time.After(20 * heartbeat):
			}
		case said.Load():
			later <- struct{}{}
		}
	})
	if err := b.Run(brokertest.NewHandler()); err != nil {
		t.Fatal(err)
	}
	nextBeat(t, beats)
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A marker published now arrives after anything the node said.
	if err := nc.Publish(natsbroker.DefaultPrefix+".nodes", []byte("marker")); err != nil {
		t.Fatal(err)
	}
	bye := false
	for m := nextBeat(t, beats); string(m.Data) != "marker"; m = nextBeat(t, beats) {
		if bye {
			t.Fatalf("%s after the bye", m.Data)
		}
		bye = strings.Contains(string(m.Data), `"bye":true`)
	}
	if !bye {
		t.Fatal("no bye")
	}
}

func nextBeat(t *testing.T, beats <-chan *nats.Msg) *nats.Msg {
	t.Helper()
	select {
	case m := <-beats:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat within 10 s")
		return nil
	}
}

// TestNickContention: nodes claiming and releasing one nick at once get it
// or are told it is taken, never an error: a record released or taken over
// between a claim's read and its write is read again.
func TestNickContention(t *testing.T) {
	t.Parallel()
	url := startNATS(t).URL()
	errs := make(chan error, 3)
	for i := range 3 {
		b := newBroker(t, url, fmt.Sprintf("c%d", i))
		t.Cleanup(func() { b.Close(context.Background()) })
		owner := b.Node() + "/1/x"
		go func() {
			for range 100 {
				switch err := b.ClaimNick(context.Background(), "x", owner); {
				case errors.Is(err, chat.ErrNickClaimed):
				case err != nil:
					errs <- err
					return
				default:
					if err := b.ReleaseNick(context.Background(), "x", owner); err != nil {
						errs <- err
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
