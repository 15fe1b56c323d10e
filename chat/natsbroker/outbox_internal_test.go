package natsbroker

import (
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestLateAck: an acknowledgement that comes after its send timed out
// still says the message is stored: its sender is answered at once, not
// after resends that, on a machine too busy to answer within
// attemptTimeout, were each timed out in turn until PublishTimeout. A late
// refusal is ignored: the message was sent again.
func TestLateAck(t *testing.T) {
	const secret = "late-ack-test-token-0123456789"
	ns, err := StartServer(ServerConfig{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Token: secret,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.URL(), nats.Token(secret))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	// Sends to "hole" are neither acknowledged nor refused.
	if _, err := nc.Subscribe("hole", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	o := newOutbox(&Broker{cfg: Config{MaxBuffered: 1 << 20, PublishTimeout: time.Minute}, nc: nc, runID: "t"})
	answer := func(tok uint64, data string) {
		o.answer(&nats.Msg{Subject: o.prefix + strconv.FormatUint(tok, 36), Data: []byte(data)})
	}
	tokenOf := func(room string) uint64 {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.rooms[room].q[0].token
	}
	done := make(chan error, 2)
	o.add("r", "hole", []byte(`{}`), "m1", func(err error) { done <- err })
	first := tokenOf("r")
	run(o.sweepOnce(time.Now().Add(attemptTimeout + time.Second))) // timed out, and sent again
	if again := tokenOf("r"); again == first || again == 0 {
		t.Fatalf("token %d after the timeout, want a new send (the first was %d)", again, first)
	}
	answer(first, `{"error":{"code":503,"err_code":10008,"description":"late refusal"}}`)
	select {
	case err := <-done:
		t.Fatalf("a late refusal answered the sender: %v", err)
	default:
	}
	answer(first, `{"stream":"s","seq":7}`)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a late acknowledgement: %v", err)
		}
	default:
		t.Fatal("a late acknowledgement was ignored")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.rooms) != 0 || len(o.flying) != 0 || len(o.late) != 0 || o.b.stats.lateAcks.Load() != 1 {
		t.Fatalf("rooms %d, in flight %d, late %d, late acks %d; want 0, 0, 0, 1", len(o.rooms), len(o.flying), len(o.late), o.b.stats.lateAcks.Load())
	}
}
