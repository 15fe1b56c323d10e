package natsbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/chat/natsbroker"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/protocol"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// node is one Parley node of a test cluster: a hub on a real server.
type node struct {
	name   string
	srv    *engine.Server
	url    string
	broker *natsbroker.Broker
	hub    *chat.Hub
}

// stop shuts the node down as SIGTERM would.
func (n *node) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// startCluster starts an embedded NATS and n nodes sharing rooms through it.
func startCluster(t *testing.T, n int) []*node {
	t.Helper()
	return startNodes(t, startNATS(t).URL(), n)
}

// startNodes starts n nodes sharing rooms through the NATS at url.
func startNodes(t *testing.T, url string, n int) []*node {
	t.Helper()
	return startNodesWith(t, url, n, 1, chat.Config{})
}

// startNodesWith starts n nodes with hub configuration cfg, named from
// n<first>.
func startNodesWith(t *testing.T, url string, n, first int, cfg chat.Config) []*node {
	t.Helper()
	return startBrokered(t, natsbroker.Config{URL: url, Token: testToken}, n, first, cfg)
}

// startBrokered starts n nodes whose brokers take bc (with a node name, a
// fast heartbeat and a quiet log), named from n<first>.
func startBrokered(t *testing.T, bc natsbroker.Config, n, first int, cfg chat.Config) []*node {
	t.Helper()
	var nodes []*node
	for i := first; i < first+n; i++ {
		name := fmt.Sprintf("n%d", i)
		bc := bc
		bc.Node, bc.Heartbeat, bc.Logger = name, 100*time.Millisecond, quiet()
		b, err := natsbroker.New(bc)
		if err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.Broker, c.PresenceInterval, c.Logger = b, 20*time.Millisecond, quiet()
		hub, err := chat.New(c)
		if err != nil {
			t.Fatal(err)
		}
		srv, wsURL := testserver.Start(t, engine.Config{}, hub)
		nodes = append(nodes, &node{name: name, srv: srv, url: wsURL, broker: b, hub: hub})
	}
	return nodes
}

// join joins room and returns the join event; the history is read too.
func join(c *chattest.Client, room string) chattest.Event {
	c.Send(protocol.Request{Type: protocol.TypeJoin, Room: room})
	j := c.Expect("join")
	c.Expect("history")
	return j
}

// joinEach connects a client to each node, one after the other, and has it
// join room; every member hears of each joiner before the next comes.
func joinEach(t *testing.T, nodes []*node, room string) []*chattest.Client {
	t.Helper()
	var cs []*chattest.Client
	for i, n := range nodes {
		c := chattest.Connect(t, n.url)
		join(c, room)
		cs = append(cs, c)
		for _, prev := range cs {
			untilCount(t, prev, room, i+1)
		}
	}
	return cs
}

// untilCount reads presence until the room's count is want.
func untilCount(t *testing.T, c *chattest.Client, room string, want int) {
	t.Helper()
	for {
		e := c.Read()
		if e.Type == "presence" && e.Room == room && e.Count == want {
			return
		}
		if e.Type != "presence" && e.Type != "typing" {
			t.Fatalf("%s: got %s %+v while waiting for %d members in %s", c.Nick, e.Type, e, want, room)
		}
	}
}

// said is a room message as its members see it.
type said struct {
	Seq  int64
	From string
	Text string
}

func messages(t *testing.T, c *chattest.Client, n int) []said {
	t.Helper()
	var out []said
	for len(out) < n {
		e := c.Expect("message")
		out = append(out, said{e.Seq, e.From, e.Text})
	}
	return out
}

func history(t *testing.T, e chattest.Event) []said {
	t.Helper()
	var out []said
	for _, m := range e.Messages {
		var msg protocol.Message
		if err := json.Unmarshal(m, &msg); err != nil {
			t.Fatal(err)
		}
		out = append(out, said{msg.Seq, msg.From, msg.Text})
	}
	return out
}

// TestClusterRoom: members on three nodes see one order with one set of
// sequence numbers; a late joiner's history and presence span the nodes.
func TestClusterRoom(t *testing.T) {
	nodes := startCluster(t, 3)
	cs := joinEach(t, nodes, "r")
	for k := range 5 {
		for i, c := range cs {
			c.Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: fmt.Sprintf("%d-%d", i, k)})
		}
	}
	first := messages(t, cs[0], 15)
	for i, s := range first {
		if s.Seq != int64(i+1) {
			t.Fatalf("message %d has seq %d: %v", i, s.Seq, first)
		}
	}
	for i, c := range cs[1:] {
		if got := messages(t, c, 15); !slices.Equal(got, first) {
			t.Fatalf("node %d's member saw %v; node 1's saw %v", i+2, got, first)
		}
	}

	late := chattest.Connect(t, nodes[2].url)
	late.Send(protocol.Request{Type: protocol.TypeJoin, Room: "r"})
	j := late.Expect("join")
	if j.Count != 4 || j.Seq != 15 || !slices.Equal(j.Members, sorted(cs[0].Nick, cs[1].Nick, cs[2].Nick, late.Nick)) {
		t.Fatalf("late joiner's join %+v: want 4 members of three nodes, seq 15", j)
	}
	if h := history(t, late.Expect("history")); !slices.Equal(h, first) {
		t.Fatalf("late joiner's history %v, want %v", h, first)
	}
	untilCount(t, cs[0], "r", 4)
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// TestClusterNicksAndDMs: nicks are unique across nodes and direct
// messages reach a nick on any node.
func TestClusterNicksAndDMs(t *testing.T) {
	nodes := startCluster(t, 3)
	alice, bob, carol := chattest.Connect(t, nodes[0].url), chattest.Connect(t, nodes[1].url), chattest.Connect(t, nodes[2].url)
	alice.Send(protocol.Request{Type: protocol.TypeNick, Nick: "Alice"})
	alice.Expect("nick")
	carol.Send(protocol.Request{Type: protocol.TypeNick, Nick: "alice"})
	carol.ExpectError(protocol.CodeNickTaken)

	bob.Send(protocol.Request{Type: protocol.TypeDM, To: "ALICE", Text: "psst"})
	if d := alice.Expect("dm"); d.From != bob.Nick || d.To != "Alice" || d.Text != "psst" {
		t.Fatalf("alice got %+v", d)
	}
	if d := bob.Expect("dm"); d.To != "Alice" || d.Text != "psst" {
		t.Fatalf("bob's copy %+v", d)
	}
	// A guest's nick names its node: no lookup needed.
	alice.Send(protocol.Request{Type: protocol.TypeDM, To: carol.Nick, Text: "hi guest"})
	if d := carol.Expect("dm"); d.From != "Alice" || d.Text != "hi guest" {
		t.Fatalf("carol got %+v", d)
	}
	alice.Expect("dm")
	bob.Send(protocol.Request{Type: protocol.TypeDM, To: "nobody", Text: "?"})
	bob.ExpectError(protocol.CodeUnknownNick)
	// A guest who does not exist on another node (a live one, or a gone
	// one, by the nick's own node part): the same error as on this one,
	// and nothing looks delivered.
	for _, to := range []string{"guest-n3-99999", "guest-n1-99999", "guest-n2-99999", "guest-n9-1"} {
		bob.Send(protocol.Request{Type: protocol.TypeDM, To: to, Text: "anyone?", ID: "dm-" + to})
		if e := bob.ExpectError(protocol.CodeUnknownNick); e.Request == nil || e.Request.ID != "dm-"+to {
			t.Fatalf("a dm to %s: got %+v, want error %s for its request", to, e, protocol.CodeUnknownNick)
		}
	}

	// A nick is free across the cluster once its holder leaves.
	alice.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		carol.Send(protocol.Request{Type: protocol.TypeNick, Nick: "alice"})
		e := carol.ExpectOneOf("nick", "error")
		if e.Type == "nick" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's nick still taken 10 s after she left: %+v", e)
		}
		time.Sleep(150 * time.Millisecond) // alice's node releases the claim when it sees her go; within the rate limit
	}
}

// TestClusterNodeStops: a node stops mid-chat; the others carry on, see
// its members leave, and its clients resume on another node from their
// last sequence number, missing nothing and seeing nothing twice.
func TestClusterNodeStops(t *testing.T) {
	nodes := startCluster(t, 3)
	cs := joinEach(t, nodes, "r")
	a, b, c := cs[0], cs[1], cs[2]
	for k := range 3 {
		a.Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: fmt.Sprint("before ", k)})
	}
	seen := messages(t, b, 3)
	messages(t, a, 3)
	messages(t, c, 3)

	nodes[1].stop(t)
	if ce, err := b.ExpectClose(); err != nil || ce.Code != 1001 {
		t.Fatalf("b's node stopped: close %v, %v; want 1001", ce, err)
	}
	untilCount(t, a, "r", 2)
	for k := range 4 {
		c.Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: fmt.Sprint("after ", k)})
	}
	missed := messages(t, a, 4)
	if got := messages(t, c, 4); !slices.Equal(got, missed) {
		t.Fatalf("a saw %v, c saw %v", missed, got)
	}

	// b comes back on node 3 and resumes from the last number it saw.
	b2 := chattest.Connect(t, nodes[2].url)
	since := seen[len(seen)-1].Seq
	b2.Send(protocol.Request{Type: protocol.TypeJoin, Room: "r", Since: &since})
	if j := b2.Expect("join"); j.Seq != 7 || j.Count != 3 {
		t.Fatalf("b's rejoin: %+v, want seq 7 and 3 members", j)
	}
	if h := history(t, b2.Expect("history")); !slices.Equal(h, missed) {
		t.Fatalf("b resumed with %v, want exactly what it missed: %v", h, missed)
	}
	a.Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: "welcome back"})
	if m := messages(t, b2, 1); m[0].Seq != 8 || m[0].Text != "welcome back" {
		t.Fatalf("b after resuming: %v", m)
	}
}

// TestNATSRestart: NATS goes away and comes back empty (no persistence).
// A message said meanwhile is kept by its node and stored once NATS is
// back; the nodes reconnect by themselves, count it, make the rooms' logs
// again and tell the members the rooms were reset, then the kept message
// comes, once, and the chat goes on across nodes. A message that waits
// longer than PublishTimeout is refused: its sender is told.
func TestNATSRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ns, err := natsbroker.StartServer(natsbroker.ServerConfig{Addr: addr, StoreDir: t.TempDir(), Token: testToken, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	nodes := startNodes(t, ns.URL(), 2)
	brokers := []*natsbroker.Broker{nodes[0].broker, nodes[1].broker}
	a, b := chattest.Connect(t, nodes[0].url), chattest.Connect(t, nodes[1].url)
	ja, _ := join(a, "r"), join(b, "r")
	untilCount(t, a, "r", 2)
	a.Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: "before"})
	if m := messages(t, b, 1); m[0].Seq != 1 {
		t.Fatalf("before the restart: %v", m)
	}
	messages(t, a, 1)
	// Its acknowledgement may come after its delivery: a message still
	// unacknowledged when NATS goes is sent again, and NATS, back empty,
	// would store it anew.
	poll.Until(t, "the message acknowledged", func() bool { return brokers[0].Stats().BufferedMsgs == 0 })

	ns.Shutdown()
	poll.Until(t, "both nodes see NATS gone", func() bool {
		return !brokers[0].Stats().Connected && !brokers[1].Stats().Connected
	})
	a.Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: "kept"})
	poll.Until(t, "the message kept", func() bool { return brokers[0].Stats().BufferedMsgs == 1 })

	ns, err = natsbroker.StartServer(natsbroker.ServerConfig{Addr: addr, StoreDir: t.TempDir(), Token: testToken, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	for _, c := range []*chattest.Client{a, b} {
		// The lobby's reset and r's, in either order; the kept message
		// after r's (the lobby's may come later: rooms are apart).
		reset, kept := map[string]bool{}, false
		for len(reset) < 2 || !kept {
			switch e := c.ExpectOneOf("reset", "message"); {
			case e.Type == "reset" && (e.Seq != 0 || e.Epoch <= ja.Epoch || reset[e.Room] || e.Room != "r" && e.Room != "lobby"):
				t.Fatalf("%s: reset %+v, want lobby and r once each, from 0, in an epoch after %d", c.Nick, e, ja.Epoch)
			case e.Type == "reset":
				reset[e.Room] = true
			case e.Room != "r" || !reset["r"] || kept || (said{e.Seq, e.From, e.Text}) != (said{1, a.Nick, "kept"}):
				t.Fatalf("%s: %+v (resets so far %v), want the kept message once, after r's reset", c.Nick, e, reset)
			default:
				kept = true
			}
		}
	}
	for i, br := range brokers {
		if st := br.Stats(); st.Reconnects != 1 || st.Disconnects != 1 || st.Resets != 2 || !st.Connected || st.PublishErrors != 0 {
			t.Fatalf("node %d after the restart: %+v", i+1, st)
		}
	}
	if st := brokers[0].Stats(); st.PublishRetries == 0 || st.BufferedMsgs != 0 || st.BufferedBytes != 0 {
		t.Fatalf("node 1's outbox after the restart: %+v", st)
	}
	b.Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: "after"})
	for _, c := range []*chattest.Client{a, b} {
		if m := messages(t, c, 1); m[0] != (said{2, b.Nick, "after"}) {
			t.Fatalf("%s after the restart: %v", c.Nick, m)
		}
	}
}

// TestPublishGivesUp: past PublishTimeout without NATS, the sender of a
// message is told it was not delivered, and so is the sender of the one
// behind it in the room; the outbox is empty again.
func TestPublishGivesUp(t *testing.T) {
	t.Parallel()
	ns, err := natsbroker.StartServer(natsbroker.ServerConfig{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Token: testToken, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	nodes := startBrokered(t, natsbroker.Config{URL: ns.URL(), Token: testToken, PublishTimeout: 300 * time.Millisecond}, 1, 1, chat.Config{})
	a := chattest.Connect(t, nodes[0].url)
	join(a, "r")
	ns.Shutdown()
	poll.Until(t, "NATS gone", func() bool { return !nodes[0].broker.Stats().Connected })
	for _, id := range []string{"m1", "m2"} {
		a.Send(protocol.Request{Type: protocol.TypeSay, ID: id, Room: "r", Text: id})
	}
	for _, id := range []string{"m1", "m2"} {
		if e := a.ExpectError(protocol.CodeNotDelivered); e.Request == nil || e.Request.ID != id {
			t.Fatalf("the error does not name %s: %+v", id, e)
		}
	}
	if st := nodes[0].broker.Stats(); st.PublishErrors != 2 || st.BufferedMsgs != 0 || st.BufferedBytes != 0 {
		t.Fatalf("after giving up: %+v", st)
	}
}

// the stream name stays short whatever the room's.
func TestLongRoomNames(t *testing.T) {
	nodes := startCluster(t, 2)
	for _, room := range []string{
		strings.Repeat("𝐀", chat.MaxRoomLength), // 128 bytes
		strings.Repeat("é", chat.MaxRoomLength),
		strings.Repeat("a", chat.MaxRoomLength),
	} {
		cs := joinEach(t, nodes, room)
		cs[0].Send(protocol.Request{Type: protocol.TypeSay, Room: room, Text: "hi"})
		for _, c := range cs {
			if m := c.Expect("message"); m.Room != room || m.Text != "hi" || m.Seq != 1 {
				t.Fatalf("%d-byte room: got %+v", len(room), m)
			}
		}
	}
}

// TestDurableHistory: with file storage, a lone node (NATS in process) and
// a three-node cluster keep every room's history and epoch across a
// restart of everything: a client resumes from the sequence number it
// last saw, in the same epoch, with no reset, and numbering goes on.
func TestDurableHistory(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			dir := t.TempDir()
			start := func() (*natsbroker.Server, []*node) {
				ns, err := natsbroker.StartServer(natsbroker.ServerConfig{InProcess: n == 1, Addr: "127.0.0.1:0",
					StoreDir: dir, Token: testToken, Logger: quiet()})
				if err != nil {
					t.Fatal(err)
				}
				bc := natsbroker.Config{URL: ns.URL(), Token: testToken, FileStorage: true}
				if n == 1 {
					bc = natsbroker.Config{Embedded: ns, FileStorage: true}
				}
				return ns, startBrokered(t, bc, n, 1, chat.Config{})
			}
			ns, nodes := start()
			cs := joinEach(t, nodes, "r")
			var ja chattest.Event
			for i := range 5 {
				cs[i%n].Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: fmt.Sprintf("m%d", i+1)})
			}
			before := messages(t, cs[0], 5)
			cs[0].Send(protocol.Request{Type: protocol.TypeLeave, Room: "r"})
			cs[0].Expect("leave")
			ja = join(cs[0], "r")
			if ja.Seq != 5 {
				t.Fatalf("join before the restart: %+v", ja)
			}
			for _, nd := range nodes {
				nd.stop(t)
			}
			ns.Shutdown()

			ns, nodes = start()
			t.Cleanup(ns.Shutdown)
			var after []*chattest.Client
			for i, nd := range nodes {
				c := chattest.Connect(t, nd.url)
				after = append(after, c)
				since := int64(3)
				c.Send(protocol.Request{Type: protocol.TypeJoin, Room: "r", Since: &since, Epoch: ja.Epoch})
				j := c.Expect("join")
				if j.Epoch != ja.Epoch || j.Seq != 5 {
					t.Fatalf("node %d after the restart: join %+v, want epoch %d and seq 5", i+1, j, ja.Epoch)
				}
				if got := history(t, c.Expect("history")); !slices.Equal(got, before[3:]) {
					t.Fatalf("node %d: resumed with %v, want %v", i+1, got, before[3:])
				}
			}
			after[n-1].Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: "after"})
			for i, c := range after {
				if m := messages(t, c, 1); m[0].Seq != 6 || m[0].Text != "after" {
					t.Fatalf("node %d: the next message %v, want seq 6", i+1, m)
				}
			}
		})
	}
}

// TestStoreLimit: an embedded NATS keeps at most MaxStore bytes; each
// room's stream reserves LogBytes of it, so past MaxStore / LogBytes rooms
// a new room is refused (room_limit, saying why) instead of filling the
// disk; a stream keeps at most LogBytes however much is said in it.
func TestStoreLimit(t *testing.T) {
	t.Parallel()
	ns, err := natsbroker.StartServer(natsbroker.ServerConfig{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Token: testToken,
		Logger: quiet(), MaxStore: 1<<20 + 64<<10}) // the rooms' 1 MiB, and the read-state bucket's 64 KiB
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nodes := startBrokered(t, natsbroker.Config{URL: ns.URL(), Token: testToken, FileStorage: true, LogBytes: 256 << 10, MaxReadBytes: 64 << 10},
		1, 1, chat.Config{RateLimit: -1, RoomCreateRate: -1, MaxRooms: 20})
	c := chattest.Connect(t, nodes[0].url) // the lobby: one stream
	made := 1
	for i := range 10 {
		c.Send(protocol.Request{Type: protocol.TypeJoin, Room: fmt.Sprintf("r%d", i)})
		e := c.ExpectOneOf("join", "error")
		if e.Type == "error" {
			if e.Code != protocol.CodeRoomLimit || !strings.Contains(e.Message, "store") {
				t.Fatalf("room %d: %+v, want room_limit naming the store", i, e)
			}
			break
		}
		c.Expect("history")
		made++
	}
	if made != 4 { // 4 x 256 KiB = 1 MiB
		t.Fatalf("%d rooms made in a 1 MiB store at 256 KiB each, want 4", made)
	}
	// Say 300 KiB in a room: its stream keeps at most 256 KiB.
	text := strings.Repeat("x", 1900)
	for range 160 {
		c.Send(protocol.Request{Type: protocol.TypeSay, Room: "r0", Text: text})
	}
	c.Send(protocol.Request{Type: protocol.TypeSay, Room: "r0", Text: "last"})
	for m := c.Expect("message"); m.Text != "last"; m = c.Expect("message") {
	}
	used, reserved, err := ns.StoreUsage()
	if err != nil || used > 1<<20+64<<10 || reserved > 1<<20+64<<10 {
		t.Fatalf("store %d bytes, reserved %d (%v): want at most 1 MiB and 64 KiB", used, reserved, err)
	}
}

// TestClusterEdits: an edit, a reply and a delete made on one node reach
// the members on the others, numbered in the room's log like messages,
// and the other nodes' histories hold them applied.
func TestClusterEdits(t *testing.T) {
	nodes := startCluster(t, 2)
	cs := joinEach(t, nodes, "r")
	expect := func(typ string) []chattest.Event {
		t.Helper()
		var out []chattest.Event
		for _, c := range cs {
			for {
				if e := c.Read(); e.Type == typ {
					out = append(out, e)
					break
				}
			}
		}
		return out
	}
	cs[0].Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: "frist"})
	m := expect("message")[1]
	cs[1].Send(protocol.Request{Type: protocol.TypeEdit, Room: "r", Seq: m.Seq, Text: "x"})
	cs[1].ExpectError(protocol.CodeForbidden) // node 2 knows whose message it is
	cs[0].Send(protocol.Request{Type: protocol.TypeEdit, Room: "r", Seq: m.Seq, Text: "first"})
	if e := expect("edited")[1]; e.Edits != m.Seq || e.Text != "first" || e.Seq != m.Seq+1 {
		t.Fatalf("node 2's member got %+v", e)
	}
	cs[1].Send(protocol.Request{Type: protocol.TypeSay, Room: "r", Text: "agreed", Reply: m.Seq})
	if r := expect("message")[0]; r.Reply == nil || r.Reply.Excerpt != "first" || r.Reply.From != cs[0].Nick {
		t.Fatalf("node 1's member got %+v", r)
	}
	cs[0].Send(protocol.Request{Type: protocol.TypeReact, Room: "r", Seq: m.Seq + 2, Emoji: "👍"}) // on the reply
	if e := expect("reactions")[1]; e.Seq != m.Seq+3 || len(e.Messages) != 1 {
		t.Fatalf("node 2's member got %+v", e)
	}
	cs[0].Send(protocol.Request{Type: protocol.TypeDelete, Room: "r", Seq: m.Seq})
	expect("deleted")
	late := chattest.Connect(t, nodes[1].url)
	join(late, "r")
	late.Send(protocol.Request{Type: protocol.TypeHistory, Room: "r"}) // 4 entries: the reaction is none
	e := late.ExpectOneOf("history", "reactions")                      // the join's counts may come first
	for e.Type != "history" {
		e = late.ExpectOneOf("history", "reactions")
	}
	h := e.Entries(t)
	if len(h) != 4 || h[0].Deleted == 0 || h[0].Text != "" || h[2].Reply == nil || h[2].Reply.Excerpt != "" {
		t.Fatalf("node 2's history: %+v", h)
	}
}

// TestClusterReads: a user's read on one node reaches its connection on
// another, and a connection that joins later, on either, learns it from
// the bucket.
func TestClusterReads(t *testing.T) {
	is := authtest.New(t)
	nodes := startNodesWith(t, startNATS(t).URL(), 2, 1, chat.Config{Verifier: is.Verifier()})
	phone := chattest.Connect(t, nodes[0].url+"?access_token="+is.Token("u1"))
	laptop := chattest.Connect(t, nodes[1].url+"?access_token="+is.Token("u1"))
	phone.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "hi"})
	m := phone.Expect("message")
	phone.Send(protocol.Request{Type: protocol.TypeRead, Room: "lobby", Seq: m.Seq})
	for _, c := range []*chattest.Client{phone, laptop} {
		for {
			if e := c.Read(); e.Type == "read" {
				if e.Seq != m.Seq || e.Room != "lobby" {
					t.Fatalf("%+v", e)
				}
				break
			}
		}
	}
	tablet := chattest.Dial(t, nodes[1].url+"?access_token="+is.Token("u1"))
	for {
		if e := tablet.Read(); e.Type == "read" {
			if e.Seq != m.Seq {
				t.Fatalf("%+v", e)
			}
			break
		}
	}
}

// TestSearchLog: a search goes on past the history a node keeps, in the
// room's stream, applying the edits and deletes made meanwhile, and
// pages back through it.
func TestSearchLog(t *testing.T) {
	nodes := startNodesWith(t, startNATS(t).URL(), 1, 1, chat.Config{HistorySize: 5, ResumeWindow: -1, RateLimit: -1})
	c := chattest.Connect(t, nodes[0].url)
	say := func(text string) int64 {
		t.Helper()
		c.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: text})
		return c.Expect("message").Seq
	}
	say("apple one")
	gone := say("apple secret")
	c.Send(protocol.Request{Type: protocol.TypeDelete, Room: "lobby", Seq: gone})
	c.Expect("deleted")
	typo := say("appel three")
	c.Send(protocol.Request{Type: protocol.TypeEdit, Room: "lobby", Seq: typo, Text: "apple three"})
	c.Expect("edited")
	for i := range 20 { // the history (5) keeps none of the above
		say(fmt.Sprintf("filler %d", i))
	}
	say("apple four")
	search := func(before int64, limit int) ([]string, int64) {
		t.Helper()
		c.Send(protocol.Request{Type: protocol.TypeSearch, Room: "lobby", Q: "APPLE", Before: before, Limit: limit})
		e := c.Expect("search")
		return e.Texts(t), e.Before
	}
	if got, next := search(0, 0); !slices.Equal(got, []string{"apple one", "apple three", "apple four"}) || next != 0 {
		t.Fatalf("search: %q, next %d", got, next)
	}
	got, next := search(0, 2)
	if !slices.Equal(got, []string{"apple three", "apple four"}) || next != typo {
		t.Fatalf("first page: %q, next %d", got, next)
	}
	if got, next := search(next, 2); !slices.Equal(got, []string{"apple one"}) || next != 0 {
		t.Fatalf("second page: %q, next %d", got, next)
	}
}
