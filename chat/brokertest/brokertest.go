// Package brokertest is the conformance test of chat.Broker
// implementations: numbering and order, state on subscribe, and, for
// brokers that join nodes into a cluster, the same order on every node,
// presence news, direct messages, nick claims and nodes leaving.
package brokertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
)

// Broker is what the suite tests: a chat.Broker that is its own
// chat.PresenceManager, as MemoryBroker and natsbroker.Broker are.
type Broker interface {
	chat.Broker
	chat.PresenceManager
}

// Handler is a chat.BrokerHandler that records what it is given.
type Handler struct {
	mu       sync.Mutex
	changed  chan struct{}
	messages map[string][]string // room -> "seq:msg"
	resets   []string
	presence []string // "room node data"
	direct   []string
	gone     []string
	rules    []string // "+key until" or "-key"
	control  []string
	load     chat.NodeInfo
}

// NewHandler returns an empty Handler.
func NewHandler() *Handler {
	return &Handler{messages: make(map[string][]string), changed: make(chan struct{}, 1)}
}

func (h *Handler) note() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// HandleMessage implements chat.BrokerHandler.
func (h *Handler) HandleMessage(room string, seq int64, msg []byte) {
	h.mu.Lock()
	h.messages[room] = append(h.messages[room], fmt.Sprintf("%d:%s", seq, msg))
	h.mu.Unlock()
	h.note()
}

// HandleReset implements chat.BrokerHandler.
func (h *Handler) HandleReset(room string, st chat.RoomState) {
	h.mu.Lock()
	h.resets = append(h.resets, fmt.Sprintf("%s@%d", room, st.Seq))
	h.mu.Unlock()
	h.note()
}

// HandlePresence implements chat.BrokerHandler.
func (h *Handler) HandlePresence(room, node string, data []byte) {
	h.mu.Lock()
	h.presence = append(h.presence, room+" "+node+" "+string(data))
	h.mu.Unlock()
	h.note()
}

// HandleDirect implements chat.BrokerHandler: a message "nobody" is for
// nobody here (chat.ErrNickNotFound).
func (h *Handler) HandleDirect(data []byte) error {
	h.mu.Lock()
	h.direct = append(h.direct, string(data))
	h.mu.Unlock()
	h.note()
	if string(data) == "nobody" {
		return chat.ErrNickNotFound
	}
	return nil
}

// HandleNodeGone implements chat.BrokerHandler.
func (h *Handler) HandleNodeGone(node string) {
	h.mu.Lock()
	h.gone = append(h.gone, node)
	h.mu.Unlock()
	h.note()
}

// HandleRule implements chat.BrokerHandler.
func (h *Handler) HandleRule(r chat.Rule, deleted bool) {
	h.mu.Lock()
	if deleted {
		h.rules = append(h.rules, "-"+r.Kind+"/"+r.Room+"/"+r.Subject)
	} else {
		h.rules = append(h.rules, fmt.Sprintf("+%s/%s/%s %d", r.Kind, r.Room, r.Subject, r.Until))
	}
	h.mu.Unlock()
	h.note()
}

// HandleControl implements chat.BrokerHandler.
func (h *Handler) HandleControl(data []byte) {
	h.mu.Lock()
	h.control = append(h.control, string(data))
	h.mu.Unlock()
	h.note()
}

// SetLoad sets what NodeLoad reports.
func (h *Handler) SetLoad(n chat.NodeInfo) {
	h.mu.Lock()
	h.load = n
	h.mu.Unlock()
}

// NodeLoad implements chat.BrokerHandler.
func (h *Handler) NodeLoad() chat.NodeInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.load
}

// Messages returns room's messages so far, as "seq:msg".
func (h *Handler) Messages(room string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.messages[room])
}

// Gone returns the nodes HandleNodeGone was told of, in order.
func (h *Handler) Gone() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.gone)
}

// Wait waits until cond, called under the handler's lock, holds, or fails
// t after 10 s.
func (h *Handler) Wait(t testing.TB, what string, cond func(h *Handler) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		h.mu.Lock()
		ok := cond(h)
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-h.changed:
		case <-deadline:
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("waiting for %s: messages %v, presence %v, direct %v, gone %v", what, h.messages, h.presence, h.direct, h.gone)
		}
	}
}

// publish publishes msg and waits for done.
func publish(t testing.TB, b chat.Broker, room, msg string) {
	t.Helper()
	publishID(t, b, room, msg, "")
}

// publishID publishes msg with a deduplication id and waits for done.
func publishID(t testing.TB, b chat.Broker, room, msg, id string) {
	t.Helper()
	errc := make(chan error, 1)
	b.Publish(room, []byte(msg), id, func(err error) { errc <- err })
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Publish(%q, %s): %v", room, msg, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Publish(%q, %s): done never called", room, msg)
	}
}

// Single tests what every Broker does, alone: b is fresh and not running.
func Single(t *testing.T, b Broker) {
	h := NewHandler()
	if err := b.Run(h); err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	st, err := b.Subscribe(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if st.Seq != 0 || st.Epoch <= 0 {
		t.Fatalf("a new room's state: %+v", st)
	}
	if again, err := b.Subscribe(context.Background(), "a"); err != nil || again.Epoch != st.Epoch || again.Seq != 0 {
		t.Fatalf("subscribing twice: %+v, %v", again, err)
	}
	if _, err := b.Subscribe(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	var wantA, wantB []string
	for i := 1; i <= 5; i++ {
		for _, r := range []string{"a", "b"} {
			msg := fmt.Sprintf(`{"n":"%s%d"}`, r, i)
			publish(t, b, r, msg)
			if r == "a" {
				wantA = append(wantA, fmt.Sprintf("%d:%s", i, msg))
			} else {
				wantB = append(wantB, fmt.Sprintf("%d:%s", i, msg))
			}
		}
	}
	h.Wait(t, "ten messages", func(h *Handler) bool { return len(h.messages["a"]) == 5 && len(h.messages["b"]) == 5 })
	if a, bm := h.Messages("a"), h.Messages("b"); !slices.Equal(a, wantA) || !slices.Equal(bm, wantB) {
		t.Fatalf("delivered a %v, b %v; want %v and %v", a, bm, wantA, wantB)
	}
	st, err = b.Subscribe(context.Background(), "a")
	if err != nil || st.Seq != 5 {
		t.Fatalf("state after 5 messages: %+v, %v", st, err)
	}
	if n := len(st.Messages); n > 0 && st.Messages[n-1].Seq != 5 {
		t.Fatalf("stored messages end at %d, want 5", st.Messages[n-1].Seq)
	}
	if err := b.Unsubscribe("b"); err != nil {
		t.Fatal(err)
	}
	// A message published again with its id is not delivered twice; the
	// same id in another room is another message.
	publishID(t, b, "a", `{"n":"once"}`, "id-1")
	publishID(t, b, "a", `{"n":"once again"}`, "id-1")
	publish(t, b, "a", `{"n":"last"}`)
	h.Wait(t, "the last message", func(h *Handler) bool { return len(h.messages["a"]) == 7 })
	if got := h.Messages("a")[5:]; !slices.Equal(got, []string{`6:{"n":"once"}`, `7:{"n":"last"}`}) {
		t.Fatalf("after a duplicate id: %v", got)
	}
	if got := h.Messages("b"); len(got) != 5 {
		t.Fatalf("room b after unsubscribing: %v", got)
	}

	// Nicks. Owner records start with the node's name.
	alice1, alice2 := b.Node()+"/1/alice", b.Node()+"/2/Alice"
	if err := b.ClaimNick(context.Background(), "alice", alice1); err != nil {
		t.Fatal(err)
	}
	if err := b.ClaimNick(context.Background(), "alice", alice1); err != nil {
		t.Fatalf("claiming a nick held already: %v", err)
	}
	if err := b.ClaimNick(context.Background(), "alice", alice2); !errors.Is(err, chat.ErrNickClaimed) {
		t.Fatalf("claiming a taken nick: %v", err)
	}
	if o, err := b.LookupNick(context.Background(), "alice"); err != nil || o != alice1 {
		t.Fatalf("LookupNick: %q, %v", o, err)
	}
	if err := b.ReleaseNick(context.Background(), "alice", alice2); err != nil {
		t.Fatal(err)
	}
	if o, _ := b.LookupNick(context.Background(), "alice"); o != alice1 {
		t.Fatalf("released by someone else: owner now %q", o)
	}
	if err := b.ReleaseNick(context.Background(), "alice", alice1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.LookupNick(context.Background(), "alice"); !errors.Is(err, chat.ErrNickNotFound) {
		t.Fatalf("LookupNick after release: %v", err)
	}

	// Rules and broadcasts come back to their own hub.
	ban := chat.Rule{Kind: chat.RuleBanUser, Subject: "u1", Until: 4102444800000}
	if err := b.PutRule(context.Background(), ban); err != nil {
		t.Fatal(err)
	}
	h.Wait(t, "the rule", func(h *Handler) bool { return slices.Contains(h.rules, "+ban_user//u1 4102444800000") })
	if err := b.DeleteRule(context.Background(), ban); err != nil {
		t.Fatal(err)
	}
	h.Wait(t, "the rule's end", func(h *Handler) bool { return slices.Contains(h.rules, "-ban_user//u1") })
	if err := b.Broadcast([]byte(`{"kind":"x"}`)); err != nil {
		t.Fatal(err)
	}
	h.Wait(t, "the broadcast", func(h *Handler) bool { return slices.Contains(h.control, `{"kind":"x"}`) })
	h.SetLoad(chat.NodeInfo{Node: b.Node(), Clients: 3})
	if n := b.Nodes(); len(n) == 0 || n[0].Clients != 3 {
		t.Fatalf("Nodes: %+v, want this node first with its load", n)
	}
}

// Cluster tests brokers of three nodes of one cluster: fresh, not
// running, with different Node names.
func Cluster(t *testing.T, nodes [3]Broker) {
	var hs [3]*Handler
	for i, b := range nodes {
		hs[i] = NewHandler()
		if err := b.Run(hs[i]); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Subscribe(context.Background(), "room"); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, b := range nodes[1:] {
			b.Close(context.Background())
		}
	}()

	// Interleaved publishers: one order, on every node.
	var wg sync.WaitGroup
	for i, b := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 20 {
				publish(t, b, "room", fmt.Sprintf(`{"from":"%d","k":%d}`, i, k))
			}
		}()
	}
	wg.Wait()
	for i, h := range hs {
		h.Wait(t, fmt.Sprintf("60 messages on node %d", i), func(h *Handler) bool { return len(h.messages["room"]) == 60 })
	}
	first := hs[0].Messages("room")
	for i, m := range first {
		if !strings.HasPrefix(m, fmt.Sprintf("%d:", i+1)) {
			t.Fatalf("message %d is %q: numbers must run 1..60", i, m)
		}
	}
	for i, h := range hs[1:] {
		if got := h.Messages("room"); !slices.Equal(got, first) {
			t.Fatalf("node %d saw %v, node 0 saw %v", i+1, got, first)
		}
	}
	st, err := nodes[2].Subscribe(context.Background(), "room")
	if err != nil || st.Seq != 60 {
		t.Fatalf("state on node 2: %+v, %v", st, err)
	}

	// Presence goes to the other nodes, not back.
	if err := nodes[0].PublishPresence("room", []byte(`{"count":1}`)); err != nil {
		t.Fatal(err)
	}
	want := "room " + nodes[0].Node() + ` {"count":1}`
	for i, h := range hs[1:] {
		h.Wait(t, fmt.Sprintf("presence on node %d", i+1), func(h *Handler) bool { return slices.Contains(h.presence, want) })
	}

	// Direct messages reach the node named, and its answer comes back.
	answers := make(chan error, 3)
	nodes[1].SendDirect(nodes[2].Node(), []byte("psst"), func(err error) { answers <- err })
	if err := answer(t, answers); err != nil {
		t.Fatalf("a direct message: %v", err)
	}
	hs[2].Wait(t, "a direct message", func(h *Handler) bool { return slices.Contains(h.direct, "psst") })
	nodes[1].SendDirect(nodes[2].Node(), []byte("nobody"), func(err error) { answers <- err })
	if err := answer(t, answers); !errors.Is(err, chat.ErrNickNotFound) {
		t.Fatalf("a direct message for nobody: %v, want ErrNickNotFound", err)
	}
	nodes[1].SendDirect("nosuchnode", []byte("psst"), func(err error) { answers <- err })
	if err := answer(t, answers); !errors.Is(err, chat.ErrNoNode) {
		t.Fatalf("a direct message to no node: %v, want ErrNoNode", err)
	}

	// Nicks are claimed cluster-wide.
	if err := nodes[0].ClaimNick(context.Background(), "bob", nodes[0].Node()+"/1/bob"); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].ClaimNick(context.Background(), "bob", nodes[1].Node()+"/1/bob"); !errors.Is(err, chat.ErrNickClaimed) {
		t.Fatalf("claiming on another node a nick held: %v", err)
	}
	if o, err := nodes[2].LookupNick(context.Background(), "bob"); err != nil || o != nodes[0].Node()+"/1/bob" {
		t.Fatalf("LookupNick on another node: %q, %v", o, err)
	}

	// Rules reach every node, and a node that starts later gets those in
	// force; broadcasts reach every node.
	mute := chat.Rule{Kind: chat.RuleMute, Subject: "u2", Room: "room", Until: 4102444800000}
	if err := nodes[1].PutRule(context.Background(), mute); err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		h.Wait(t, fmt.Sprintf("the rule on node %d", i), func(h *Handler) bool { return slices.Contains(h.rules, "+mute/room/u2 4102444800000") })
	}
	if err := nodes[2].Broadcast([]byte("all")); err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		h.Wait(t, fmt.Sprintf("the broadcast on node %d", i), func(h *Handler) bool { return slices.Contains(h.control, "all") })
	}

	// A node that leaves is gone for the others, and its nicks are free.
	// On a busy machine a node may have been taken for gone before (three
	// heartbeats unheard) and back since: wait for the news of this close.
	var goneBefore [3]int
	for i, h := range hs {
		h.mu.Lock()
		goneBefore[i] = countOf(h.gone, nodes[0].Node())
		h.mu.Unlock()
	}
	if err := nodes[0].Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, h := range hs[1:] {
		h.Wait(t, fmt.Sprintf("node 0 gone on node %d", i+1), func(h *Handler) bool { return countOf(h.gone, nodes[0].Node()) > goneBefore[i+1] })
	}
	if err := nodes[1].ClaimNick(context.Background(), "bob", nodes[1].Node()+"/1/bob"); err != nil {
		t.Fatalf("claiming the nick of a node gone: %v", err)
	}
}

// countOf counts the times s is in list.
func countOf(list []string, s string) int {
	n := 0
	for _, e := range list {
		if e == s {
			n++
		}
	}
	return n
}

// answer waits for a SendDirect's answer.
func answer(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to a direct message within 10 s")
		return nil
	}
}
