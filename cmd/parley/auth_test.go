package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/wstest"
	"github.com/parleyhq/parley/protocol"
)

// TestServeTokensAndAPI: parley serve with a key and an API key: a client
// without a token is refused (guests are off by default with a key), one
// with a token is the token's user, the API publishes to it, and the
// metrics count both.
func TestServeTokensAndAPI(t *testing.T) {
	is := authtest.New(t)
	keyFile := filepath.Join(t.TempDir(), "api.key")
	if err := os.WriteFile(keyFile, []byte("an-api-key-for-this-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, addr := startParley(t, "--jwt-secret", is.SecretFile, "--jwt-audience", authtest.Audience, "--api-key-file", keyFile,
		"--private-room", "team-*", "--read-only-room", "news")
	ws := "ws://" + addr + "/ws"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := wstest.Dial(ctx, ws, nil)
	if resp == nil || resp.StatusCode != 401 {
		t.Fatalf("no token: %v %v, want 401", resp, err)
	}
	c := chattest.Dial(t, ws+"?access_token="+url.QueryEscape(is.Token("u-ann")))
	if w := c.Expect("welcome"); w.User != "u-ann" || w.Nick != "u-ann" {
		t.Fatalf("welcome %+v", w)
	}
	c.Expect("join")
	c.Expect("history")
	c.Send(protocol.Request{Type: protocol.TypeJoin, Room: "team-a"})
	c.ExpectError(protocol.CodeForbidden)

	req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/rooms/lobby/messages", strings.NewReader(`{"text":"from the API"}`))
	req.Header.Set("Authorization", "Bearer an-api-key-for-this-test")
	r, err := http.DefaultClient.Do(req)
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("API publish: %v %v", r, err)
	}
	r.Body.Close()
	if m := c.Expect("message"); m.Text != "from the API" || !m.System {
		t.Fatalf("%+v", m)
	}
	m := waitHTTP(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		`parley_handshakes_refused_total{reason="token_missing"} 1`,
		`parley_api_requests_total{route="POST /api/v1/rooms/{room}/messages",status="200"} 1`,
		"parley_users 1",
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	r, err = http.Get("http://" + addr + "/api/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 401 {
		t.Fatalf("the API without its key: %d %s", r.StatusCode, b)
	}
}

// TestParseAuthFlags: flags that cannot work together, or files that
// are not keys, are refused at start naming the flag.
func TestParseAuthFlags(t *testing.T) {
	is := authtest.New(t)
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--jwt-secret", short}, "--jwt-secret"},
		{[]string{"--jwt-public-key", is.SecretFile}, "--jwt-public-key"},
		{[]string{"--jwt-audience", "x"}, "need a key"},
		{[]string{"--guests", "maybe"}, "--guests"},
		{[]string{"--guests", "off"}, "nobody could connect"},
		{[]string{"--api-listen", "127.0.0.1:0"}, "--api-key-file"},
		{[]string{"--private-room", "lobby"}, "default room"},
		{[]string{"--private-room", "a b"}, "PrivateRooms"},
		{[]string{"--nats", "nats://127.0.0.1:4222", "--nats-token-file", short, "--nats-creds", short}, "one kind of credentials"},
		{[]string{"--nats-token-file", filepath.Join(t.TempDir(), "none")}, "--nats-token-file"},
	} {
		if _, err := parseServe(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	cfg, err := parseServe([]string{"--jwt-secret", "HS256:" + is.SecretFile, "--guests", "on", "--private-room", "team-*"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Chat.Verifier == nil || cfg.Chat.Guests != chat.GuestsAllowed || cfg.Chat.PrivateRooms[0] != "team-*" {
		t.Fatalf("%+v", cfg.Chat)
	}
}

// TestParseCompressionFlags: the compression flags reach engine.Config and
// bad values are refused naming the field.
func TestParseCompressionFlags(t *testing.T) {
	cfg, err := parseServe([]string{"--compression", "--compression-level", "6", "--compression-threshold", "-1", "--compression-context-takeover"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if e := cfg.Engine; !e.Compression || e.CompressionLevel != 6 || e.CompressionThreshold != -1 || !e.CompressionContextTakeover {
		t.Fatalf("%+v", e)
	}
	for _, args := range [][]string{{"--compression-level", "10"}, {"--compression-threshold", "-2"}} {
		if _, err := parseServe(args, io.Discard); err == nil || !strings.Contains(err.Error(), "Compression") {
			t.Errorf("%q: %v, want an error naming the field", args, err)
		}
	}
}

// TestVersion: `parley version` and `parley --version` print the version.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version", "-version"} {
		var out, errOut strings.Builder
		if code := run([]string{arg}, &out, &errOut); code != 0 || strings.TrimSpace(out.String()) == "" {
			t.Errorf("parley %s: exit %d, out %q, err %q", arg, code, out.String(), errOut.String())
		}
	}
}

// TestLoadtestFlagsThatDoNothing: a flag the scenario does not use is an
// error naming it (--duration with hold did nothing, silently).
func TestLoadtestFlagsThatDoNothing(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--duration", "5s"}, "--duration applies to the chat"},
		{[]string{"--scenario", "hold", "--rate", "2"}, "--rate applies"},
		{[]string{"--scenario", "chat", "--burst", "5"}, "--burst applies to the burst scenario"},
	} {
		if _, _, err := parseLoadtest(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
	if _, _, err := parseLoadtest([]string{"--scenario", "chat", "--duration", "5s", "--rate", "2"}, io.Discard); err != nil {
		t.Fatal(err)
	}
}
