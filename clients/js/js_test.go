package parleyjs_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/protocol"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// nodeWithWS returns node's path, once it and the ws package are there:
// CI installs ws (npm ci --prefix clients/js) and has Node; elsewhere the
// test is skipped without them, and fails without them when CI is set.
func nodeWithWS(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if _, serr := os.Stat("node_modules/ws"); err != nil || serr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node (%v) or node_modules/ws (%v) missing: npm ci --prefix clients/js", err, serr)
		}
		t.Skip("node or node_modules/ws missing: npm ci --prefix clients/js")
	}
	return node
}

// TestNode runs the library's tests (test/*.test.mjs) under Node with the
// ws package, against real parley serve processes built here.
func TestNode(t *testing.T) {
	node := nodeWithWS(t)
	bin := filepath.Join(t.TempDir(), "parley")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/parley")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building parley: %v\n%s", err, out)
	}
	cmd := exec.Command(node, "--test", "--test-reporter=spec", "test/")
	cmd.Env = append(os.Environ(), "PARLEY_BIN="+bin)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("node --test: %v", err)
	}
}

// TestNodeRetryOnce: the library, under Node, says five messages through
// a broker that answers not_delivered to each first copy and stores it
// 300 ms later anyway; it says each again with the same id, so the room
// holds each once (a resend with a new id would be heard twice).
func TestNodeRetryOnce(t *testing.T) {
	node := nodeWithWS(t)
	fb := chattest.NewFlakyBroker(chattest.Late)
	hub, err := chat.New(chat.Config{Broker: fb, Presence: fb.MemoryBroker, Reads: fb.MemoryBroker, Logger: testserver.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	_, url := testserver.Start(t, engine.Config{}, hub)
	cmd := exec.Command(node, "--test", "--test-reporter=spec", "test/flaky.test.mjs")
	cmd.Env = append(os.Environ(), "PARLEY_FLAKY_URL="+url)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("node --test: %v", err)
	}
	poll.Until(t, "the late copies tried", func() bool { return fb.LateDone.Load() == 5 })
	msgs, err := hub.History(context.Background(), "lobby", 100)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, m := range msgs {
		var e protocol.Message
		if err := json.Unmarshal(m, &e); err != nil {
			t.Fatal(err)
		}
		texts = append(texts, e.Text)
	}
	if want := []string{"b0", "b1", "b2", "b3", "b4"}; !slices.Equal(texts, want) {
		t.Fatalf("the room holds %q, want %q", texts, want)
	}
}
