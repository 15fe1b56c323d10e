package chat_test

import (
	"log/slog"
	"slices"
	"strconv"
	"testing"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }

func quiet() *slog.Logger { return testserver.Logger() }

// startChat runs a server with a Hub for cfg on /ws and returns the hub, the
// server and the URL.
func startChat(t testing.TB, cfg chat.Config, ecfg engine.Config) (*chat.Hub, *engine.Server, string) {
	t.Helper()
	cfg.Logger = quiet()
	hub, err := chat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, url := testserver.Start(t, ecfg, hub)
	return hub, srv, url
}

// client and event are chattest's, under the names these tests use.
type (
	client = chattest.Client
	event  = chattest.Event
)

func dial(t testing.TB, url string) *client    { return chattest.Dial(t, url) }
func connect(t testing.TB, url string) *client { return chattest.Connect(t, url) }

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func sorted(s ...string) []string { slices.Sort(s); return s }
