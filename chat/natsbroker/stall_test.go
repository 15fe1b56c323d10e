package natsbroker_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

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
		t.Cleanup(func() { b.Close() })
		brokers, hs = append(brokers, b), append(hs, h)
		for _, room := range []string{"slow", "other"} {
			if _, err := b.Subscribe(room); err != nil {
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
