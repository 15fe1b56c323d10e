package natsbroker_test

import (
	"context"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/chat/brokertest"
	"github.com/parleyhq/parley/chat/natsbroker"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wstest"
	"github.com/parleyhq/parley/protocol"
)

// TestEmbeddedNATSRequiresAuth: a NATS client without the token, or with
// another, is refused by the embedded server; with it, it is let in.
func TestEmbeddedNATSRequiresAuth(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	for _, opts := range [][]nats.Option{nil, {nats.Token("wrong-token-0123456789")}, {nats.UserInfo("parley", testToken)}} {
		nc, err := nats.Connect(s.URL(), append(opts, nats.MaxReconnects(0))...)
		if err == nil {
			nc.Close()
			t.Fatalf("connected with %d options, want an authorization violation", len(opts))
		}
		if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("connect: %v, want an authorization violation", err)
		}
	}
	nc, err := nats.Connect(s.URL(), nats.Token(testToken))
	if err != nil {
		t.Fatalf("with the token: %v", err)
	}
	nc.Close()
	if _, err := natsbroker.New(natsbroker.Config{URL: s.URL(), Logger: quiet()}); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("a broker without credentials: %v, want an authorization violation", err)
	}
	if _, err := natsbroker.StartServer(natsbroker.ServerConfig{Addr: "127.0.0.1:0", Token: "short", Logger: quiet()}); err == nil {
		t.Fatal("an embedded server with a 5-byte token: want an error")
	}
}

// TestHostileBus: what a client with the cluster's credentials (but not a
// node) publishes is decoded strictly and checked: a room message with
// fields of the server's, forged presence, DMs, broadcasts and heartbeats
// are dropped and counted, and the room goes on.
func TestHostileBus(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	nodes := startNodes(t, ns.URL(), 2)
	a, b := chattest.Connect(t, nodes[0].url), chattest.Connect(t, nodes[1].url)
	untilCount(t, a, "lobby", 2)
	nc, js, ctx := busClient(t, ns.URL())
	for _, msg := range []string{
		`{"from":"alice","text":"hi","ts":1,"type":"welcome"}`, // a field of the server's
		`{"from":"alice","text":"hi","ts":1,"seq":99}`,
		`{"from":"alice","text":"hi","ts":1,"from":"bob"}`, // a key twice
		`{"from":"al ice","text":"hi","ts":1}`,             // no nick
		`{"from":"alice","text":"\u202eevil","ts":1}`,      // a bidi override
		`{"from":"alice","text":"","ts":1}`,
		`{"from":"system","text":"hi","ts":1}`, // system without its flag
		`["not","an","object"]`,
	} {
		if _, err := js.Publish(ctx, "parley.in.lobby", []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct{ subj, data string }{
		{"parley.presence.lobby", `{"count":1,"joined":["<script>"]}`},
		{"parley.presence.lobby", `{"count":-5}`},
		{"parley.node.n1.direct", `{"to":1,"key":"x","from":"alice","text":"hi","ts":1,"extra":true}`},
		{"parley.control", `{"kind":"disconnect","user":"u1","code":1000}`},
		{"parley.control", `{"kind":"nuke","user":"u1"}`},
		{"parley.nodes", `{"node":"n9","bye":true,"role":"admin"}`},
		{"parley.nodes", `{"node":"../etc"}`},
	} {
		m := nats.NewMsg(p.subj)
		m.Header.Set("Parley-Node", "n9")
		m.Data = []byte(p.data)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	_ = nc.Flush()
	a.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "still fine"})
	for _, c := range []*chattest.Client{a, b} {
		m := c.Expect("message")
		if m.Text != "still fine" || m.Seq != 9 {
			t.Fatalf("%s got %+v, want the real message as number 9 (8 dropped before it)", c.Nick, m)
		}
	}
	poll.Until(t, "the drops counted on both nodes", func() bool {
		for _, n := range nodes {
			d, bst := n.hub.Stats().Dropped, n.broker.Stats()
			if d["message"] != 8 || d["presence"] < 2 || d["control"] != 2 || bst.DroppedBeats != 2 {
				return false
			}
		}
		return nodes[0].hub.Stats().Dropped["direct"] == 1
	})
}

// TestStreamDeletedUnderANode: a room's stream deleted under the nodes is
// made again at once (the members are told of the reset), and the next
// message is delivered, not refused.
func TestStreamDeletedUnderANode(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	nodes := startNodes(t, ns.URL(), 2)
	a, b := chattest.Connect(t, nodes[0].url), chattest.Connect(t, nodes[1].url)
	untilCount(t, a, "lobby", 2)
	a.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "before"})
	messages(t, a, 1)
	messages(t, b, 1)
	_, js, ctx := busClient(t, ns.URL())
	if err := js.DeleteStream(ctx, "parley_room_lobby"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*chattest.Client{a, b} {
		if r := c.Expect("reset"); r.Room != "lobby" || r.Seq != 0 {
			t.Fatalf("%s: %+v", c.Nick, r)
		}
	}
	b.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "after"})
	for _, c := range []*chattest.Client{a, b} {
		if m := c.Expect("message"); m.Text != "after" || m.Seq != 1 {
			t.Fatalf("%s got %+v", c.Nick, m)
		}
	}
	if n := nodes[0].broker.Stats().Recreated + nodes[1].broker.Stats().Recreated; n == 0 {
		t.Fatal("no stream counted as re-created")
	}
}

// TestClusterAccess: three nodes with tokens. A user banned through one
// node is closed and refused at the handshake on every node, and on a
// node started after the ban; a DM to a user reaches its connections on
// every node; a disconnection reaches them all.
func TestClusterAccess(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	is := authtest.New(t)
	cfg := chat.Config{Verifier: is.Verifier()}
	nodes := startNodesWith(t, ns.URL(), 3, 1, cfg)
	alice := is.Token("u-alice")
	var tabs []*chattest.Client
	for _, n := range nodes {
		c := chattest.Dial(t, n.url+"?access_token="+url.QueryEscape(alice))
		c.Expect("welcome")
		c.Expect("join")
		c.Expect("history")
		tabs = append(tabs, c)
	}
	bob := chattest.Dial(t, nodes[1].url+"?access_token="+url.QueryEscape(is.Token("u-bob")))
	bob.Expect("welcome")
	bob.Expect("join")
	bob.Expect("history")
	// alice, on three nodes, is one member: the lobby has two.
	untilCount(t, bob, "lobby", 2)
	p := nodes[0].hub
	poll.Until(t, "node 1 counts alice once", func() bool {
		rp, err := p.Presence(context.Background(), "lobby")
		return err == nil && rp.Count == 2 && len(rp.Members) == 2
	})
	bob.Send(protocol.Request{Type: protocol.TypeDM, User: "u-alice", Text: "everywhere"})
	for i, c := range tabs {
		if d := c.Expect("dm"); d.Text != "everywhere" || d.FromUser != "u-bob" {
			t.Fatalf("tab %d got %+v", i, d)
		}
	}
	bob.Expect("dm")
	poll.Until(t, "the cluster's users", func() bool {
		for _, n := range nodes {
			if len(n.hub.Nodes()) != 3 {
				return false
			}
		}
		users := 0
		for _, l := range nodes[0].hub.Nodes() {
			users += l.Users
		}
		return users == 4 // alice once per node, bob once
	})

	if err := nodes[2].hub.Disconnect("u-bob", 4321, "bye"); err != nil {
		t.Fatal(err)
	}
	if ce, err := bob.ExpectClose(); err != nil || ce.Code != 4321 || ce.Reason != "bye" {
		t.Fatalf("bob: %+v, %v", ce, err)
	}

	if err := nodes[0].hub.PutRule(context.Background(), chat.Rule{Kind: chat.RuleBanUser, Subject: "u-alice", Until: time.Now().Add(time.Hour).UnixMilli(), Reason: "spam"}); err != nil {
		t.Fatal(err)
	}
	for i, c := range tabs {
		if ce, err := c.ExpectClose(); err != nil || ce.Code != int(protocol.CloseBanned) {
			t.Fatalf("tab %d: %+v, %v", i, ce, err)
		}
	}
	late := startNodesWith(t, ns.URL(), 1, 4, cfg)
	for _, n := range append(nodes, late...) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, resp, err := wstest.Dial(ctx, n.url+"?access_token="+url.QueryEscape(alice), nil)
		cancel()
		if resp == nil {
			t.Fatalf("%s: %v", n.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 403 || !strings.Contains(string(body), "banned until") {
			t.Fatalf("%s: %d %q, want 403 banned", n.name, resp.StatusCode, body)
		}
	}
}

// busClient connects to the cluster's NATS as anyone holding its token
// could, for a test to play the hostile client; it and the returned
// context end with the test.
func busClient(t *testing.T, url string) (*nats.Conn, jetstream.JetStream, context.Context) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Token(testToken))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return nc, js, ctx
}

// TestPublishRecreatesAMissingStream: a publication that finds no stream
// (deleted, or never made) makes it and is published once more, rather
// than failing until a reconnect.
func TestPublishRecreatesAMissingStream(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	b := newBroker(t, ns.URL(), "solo")
	if err := b.Run(brokertest.NewHandler()); err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	done := make(chan error, 1)
	b.Publish("nostream", []byte(`{"from":"alice","text":"hi","ts":1}`), "", func(err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("publish to a room without a stream: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
	if st := b.Stats(); st.Recreated != 1 || st.PublishErrors != 0 {
		t.Fatalf("recreated %d, publish errors %d", st.Recreated, st.PublishErrors)
	}
}
