package natsbroker_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/chat/natsbroker"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/protocol"
)

// natsCluster is n embedded NATS servers clustered on loopback, each with
// its own JetStream store.
type natsCluster struct {
	cfgs    []natsbroker.ServerConfig
	servers []*natsbroker.Server
	names   []string
}

// startNATSCluster starts n clustered servers on free ports, each routed
// to all, and waits for JetStream to elect its leader.
func startNATSCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	c := &natsCluster{}
	var routes []string
	for range n {
		routes = append(routes, freeAddr(t))
	}
	for i := range n {
		c.cfgs = append(c.cfgs, natsbroker.ServerConfig{Addr: freeAddr(t), ClusterAddr: routes[i], Routes: routes,
			Name: fmt.Sprintf("s%d", i+1), StoreDir: t.TempDir(), Token: testToken, Logger: quiet()})
		c.names = append(c.names, c.cfgs[i].Name)
		c.servers = append(c.servers, nil)
		c.start(t, i)
	}
	for _, s := range c.servers {
		if err := s.WaitJetStream(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// start starts (or starts again) server i.
func (c *natsCluster) start(t *testing.T, i int) {
	t.Helper()
	s, err := natsbroker.StartServer(c.cfgs[i])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	c.servers[i] = s
}

// freeAddr returns a loopback address with a port free now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// urls is every server's client URL, comma-separated.
func (c *natsCluster) urls() string {
	var u []string
	for _, s := range c.servers {
		u = append(u, s.URL())
	}
	return strings.Join(u, ",")
}

// streamInfo reads a stream's info through a client of its own, retrying
// while the stream has no leader.
func (c *natsCluster) streamInfo(t *testing.T, url, name string) *jetstream.StreamInfo {
	t.Helper()
	conn, err := nats.Connect(url, nats.Token(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	js, _ := jetstream.New(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := js.Stream(ctx, name)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = s.Info(ctx)
		}
		cancel()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s: no leader within 30 s: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReplicasChosen: against a cluster of three, streams and buckets get
// three replicas without being asked; a stream and a bucket made with one
// get three when a node with three opens them; against a lone server one;
// asking a lone server for three is an error naming Replicas.
func TestReplicasChosen(t *testing.T) {
	t.Parallel()
	cl := startNATSCluster(t, 3)
	nodes := startBrokered(t, natsbroker.Config{URL: cl.servers[0].URL(), Token: testToken}, 1, 1, chat.Config{})
	a := chattest.Connect(t, nodes[0].url)
	join(a, "r")
	for _, name := range []string{"parley_room_r", "KV_parley_nicks", "KV_parley_rules", "KV_parley_rooms"} {
		if info := cl.streamInfo(t, cl.urls(), name); info.Config.Replicas != 3 || len(info.Cluster.Replicas) != 2 {
			t.Errorf("%s: %d replicas configured, %d followers; want 3 and 2", name, info.Config.Replicas, len(info.Cluster.Replicas))
		}
	}

	// A stream made with one replica gets three when a node with three
	// opens it; the bucket too.
	one, err := natsbroker.New(natsbroker.Config{URL: cl.urls(), Token: testToken, Replicas: 1, Prefix: "other", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := one.Subscribe(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	one.Close(context.Background())
	if info := cl.streamInfo(t, cl.urls(), "other_room_r"); info.Config.Replicas != 1 {
		t.Fatalf("made with 1 replica: %d", info.Config.Replicas)
	}
	three, err := natsbroker.New(natsbroker.Config{URL: cl.urls(), Token: testToken, Prefix: "other", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer three.Close(context.Background())
	if _, err := three.Subscribe(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"other_room_r", "KV_other_nicks"} {
		if info := cl.streamInfo(t, cl.urls(), name); info.Config.Replicas != 3 {
			t.Errorf("%s after a node with 3 replicas opened it: %d", name, info.Config.Replicas)
		}
	}

	lone := startNATS(t)
	_, err = natsbroker.New(natsbroker.Config{URL: lone.URL(), Token: testToken, Replicas: 3, Logger: quiet()})
	if err == nil || !strings.Contains(err.Error(), "Replicas 3") {
		t.Fatalf("three replicas on a lone server: %v, want an error naming Replicas", err)
	}
	b, err := natsbroker.New(natsbroker.Config{URL: lone.URL(), Token: testToken, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	if _, err := b.Subscribe(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	conn, err := nats.Connect(lone.URL(), nats.Token(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	js, _ := jetstream.New(conn)
	s, err := js.Stream(context.Background(), "parley_room_r")
	if err != nil || s.CachedInfo().Config.Replicas != 1 {
		t.Fatalf("a lone server's stream: %v", err)
	}
}

// TestLeaderDies: the NATS server that leads a room's stream, and that the
// sender's node is connected to, dies while the room is chatting. The room
// goes on: every message said, before, during and after, reaches every
// member once, in the order said, with consecutive sequence numbers; no
// sender is told a message was not delivered.
func TestLeaderDies(t *testing.T) {
	cl := startNATSCluster(t, 3)
	// Node 2 knows every server; it makes the room's stream.
	n2 := startBrokered(t, natsbroker.Config{URL: cl.urls(), Token: testToken}, 1, 2, chat.Config{})[0]
	b := chattest.Connect(t, n2.url)
	join(b, "r")
	leader := cl.streamInfo(t, cl.urls(), "parley_room_r").Cluster.Leader
	li := -1
	for i, name := range cl.names {
		if name == leader {
			li = i
		}
	}
	if li < 0 {
		t.Fatalf("leader %q is none of %v", leader, cl.names)
	}
	// Node 1 is connected to the leader (it finds the others from it).
	n1 := startBrokered(t, natsbroker.Config{URL: cl.servers[li].URL(), Token: testToken}, 1, 1, chat.Config{RateLimit: 1000, RateBurst: 1000})[0]
	a := chattest.Connect(t, n1.url)
	join(a, "r")
	untilCount(t, a, "r", 2)

	const total, killAt = 60, 20
	for i := range total {
		if i == killAt {
			cl.servers[li].Shutdown()
		}
		a.Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: strconv.Itoa(i)})
		time.Sleep(10 * time.Millisecond) // a chat's pace: the outage falls between messages
	}
	for _, c := range []*chattest.Client{a, b} {
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		got := messages(t, c, total)
		for i, m := range got {
			if m.Text != strconv.Itoa(i) || m.Seq != got[0].Seq+int64(i) {
				t.Fatalf("%s: message %d is %+v (all: %v)", c.Nick, i, m, got)
			}
		}
	}
	for _, n := range []*node{n1, n2} {
		if st := n.broker.Stats(); st.PublishErrors != 0 || st.Overtaken != 0 || st.Lost != 0 || st.Resets != 0 {
			t.Fatalf("%s: %+v", n.name, st)
		}
	}
	if st := n1.broker.Stats(); st.Reconnects == 0 {
		t.Fatalf("node 1 never reconnected: %+v", st)
	}
}
