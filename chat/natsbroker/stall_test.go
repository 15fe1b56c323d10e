package natsbroker_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/chat/brokertest"
	"github.com/parleyhq/parley/chat/natsbroker"
	"github.com/parleyhq/parley/internal/poll"
)

// TestNoStallDuringRepair: a repair that hangs (NATS slow to answer it,
// injected) holds back its own room only. Meanwhile node 1 keeps hearing
// the others' heartbeats, many times longer than it takes to declare a
// silent node gone, and declares none; it delivers another room's
// messages; and once the repair ends the room's messages come in order,
// the missed one included, the live ones held meanwhile after it.
func TestNoStallDuringRepair(t *testing.T) {
	ns := startNATS(t)
	const heartbeat = 50 * time.Millisecond
	fetching, release := make(chan string, 1), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	var brokers []*natsbroker.Broker
	var hs []*brokertest.Handler
	for i := range 3 {
		b, err := natsbroker.New(natsbroker.Config{URL: ns.URL(), Node: fmt.Sprintf("n%d", i+1), Token: testToken,
			Heartbeat: heartbeat, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			natsbroker.SetTestHooks(b, func(room string) {
				fetching <- room
				<-release
			}, func(room string, seq uint64) bool { return room == "slow" && seq == 2 })
		}
		h := brokertest.NewHandler()
		if err := b.Run(h); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close(context.Background()) })
		brokers, hs = append(brokers, b), append(hs, h)
		for _, room := range []string{"slow", "other"} {
			if _, err := b.Subscribe(context.Background(), room); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(free) // before the brokers' Close (cleanups run last first), which waits for the repair
	poll.Until(t, "node 1 to hear both others", func() bool { return brokers[0].Stats().Nodes == 2 })
	publish := func(b *natsbroker.Broker, room, text string) {
		t.Helper()
		done := make(chan error, 1)
		b.Publish(room, []byte(text), "", func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for _, text := range []string{"a", "b", "c"} { // b is lost on the way to node 1: c shows the gap
		publish(brokers[1], "slow", text)
	}
	select {
	case room := <-fetching:
		if room != "slow" {
			t.Fatalf("a repair of %q", room)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("node 1 never started repairing the gap")
	}

	// The repair hangs. Twenty heartbeats of each other node (3 missed
	// make a node gone) are heard meanwhile.
	beats := brokers[0].Stats().Beats
	poll.Until(t, "40 heartbeats during the repair", func() bool { return brokers[0].Stats().Beats >= beats+40 })
	publish(brokers[2], "other", "x")
	poll.Until(t, "another room's message during the repair", func() bool {
		return slices.Equal(hs[0].Messages("other"), []string{"1:x"})
	})
	publish(brokers[2], "slow", "d")
	if st := brokers[0].Stats(); len(hs[0].Gone()) > 0 || st.NodesGone != 0 || st.Nodes != 2 {
		t.Fatalf("during the repair node 1 declared %v gone (stats %+v)", hs[0].Gone(), st)
	}
	if got := hs[0].Messages("slow"); !slices.Equal(got, []string{"1:a"}) {
		t.Fatalf("during the repair node 1 delivered %v; want only what came before the gap", got)
	}

	free()
	want := []string{"1:a", "2:b", "3:c", "4:d"}
	poll.Until(t, "the room's messages in order", func() bool { return slices.Equal(hs[0].Messages("slow"), want) })
	if st := brokers[0].Stats(); st.Repaired != 1 || st.Lost != 0 {
		t.Fatalf("repaired %d, lost %d; want 1 and 0", st.Repaired, st.Lost)
	}
}

// TestLostTailRepaired: a room's last message lost on its way to a node
// (its republished copy dropped, as when the node reconnects while it is
// sent) reaches it all the same although nothing follows it in the room:
// the sender's heartbeats name the room's tail. A forged heartbeat naming
// a tail the stream does not have delivers nothing and holds nothing
// back.
func TestLostTailRepaired(t *testing.T) {
	ns := startNATS(t)
	var brokers []*natsbroker.Broker
	var hs []*brokertest.Handler
	for i := range 2 {
		b, err := natsbroker.New(natsbroker.Config{URL: ns.URL(), Node: fmt.Sprintf("n%d", i+1), Token: testToken,
			Heartbeat: 50 * time.Millisecond, Logger: quiet(), PublishTimeout: time.Minute}) // a repair waiting for a forged tail would wait that long
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			natsbroker.SetTestHooks(b, nil, func(room string, seq uint64) bool { return room == "quiet" && seq == 2 })
		}
		h := brokertest.NewHandler()
		if err := b.Run(h); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close(context.Background()) })
		if _, err := b.Subscribe(context.Background(), "quiet"); err != nil {
			t.Fatal(err)
		}
		brokers, hs = append(brokers, b), append(hs, h)
	}
	publish := func(text string) {
		t.Helper()
		done := make(chan error, 1)
		brokers[1].Publish("quiet", []byte(text), "", func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	publish("a")
	publish("b") // the last word: lost on its way to n1
	poll.Until(t, "n1 to get the lost last message", func() bool {
		return slices.Equal(hs[0].Messages("quiet"), []string{"1:a", "2:b"})
	})
	if st := brokers[0].Stats(); st.TailRepairs == 0 || st.Repaired != 1 || st.Lost != 0 {
		t.Fatalf("tail repairs %d, repaired %d, lost %d; want 1 or more, 1, 0", st.TailRepairs, st.Repaired, st.Lost)
	}

	nc, err := nats.Connect(ns.URL(), nats.Token(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	forged := []byte(`{"node":"n9","clients":0,"users":0,"rooms":1,"tails":{"quiet":1000000}}`)
	beats := brokers[0].Stats().Beats
	for range 5 {
		if err := nc.Publish(natsbroker.DefaultPrefix+".nodes", forged); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, "n1 to hear the forged heartbeats", func() bool { return brokers[0].Stats().Beats >= beats+5 })
	publish("c")
	poll.Until(t, "the next message, at once", func() bool {
		return slices.Equal(hs[0].Messages("quiet"), []string{"1:a", "2:b", "3:c"})
	})
	if st := brokers[0].Stats(); st.Lost != 0 {
		t.Fatalf("lost %d after a forged tail", st.Lost)
	}
}

// TestReconnectAudit: a node that has reconnected asks its rooms' streams
// where they end itself, for a while after: a republished copy it missed
// is fetched though no node announces it (the publisher here is no node:
// a node that died) and no later message comes to show the gap. It failed
// before the audits (the room stayed at 1:a).
func TestReconnectAudit(t *testing.T) {
	ns := startNATS(t)
	b, err := natsbroker.New(natsbroker.Config{URL: ns.URL(), Node: "n1", Token: testToken, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	reopened := make(chan string, 16)
	natsbroker.SetTestHooks(b, nil, func(room string, seq uint64) bool { return room == "quiet" && seq == 2 })
	natsbroker.SetReopenHook(b, func(room string) { reopened <- room })
	h := brokertest.NewHandler()
	if err := b.Run(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	if _, err := b.Subscribe(context.Background(), "quiet"); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.URL(), nats.Token(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(text string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := js.Publish(ctx, natsbroker.InSubject(b, "quiet"), []byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	publish("a")
	poll.Until(t, "n1 to get 1:a", func() bool { return slices.Equal(h.Messages("quiet"), []string{"1:a"}) })
	if err := natsbroker.ForceReconnect(b); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reopened:
	case <-time.After(30 * time.Second):
		t.Fatal("the room was not reopened within 30 s of the reconnect")
	}
	publish("b") // its republished copy is lost on its way to n1
	poll.Until(t, "n1 to fetch the lost 2:b", func() bool {
		return slices.Equal(h.Messages("quiet"), []string{"1:a", "2:b"})
	})
	if st := b.Stats(); st.TailRepairs == 0 || st.Lost != 0 {
		t.Fatalf("tail repairs %d, lost %d; want 1 or more, 0", st.TailRepairs, st.Lost)
	}
}
