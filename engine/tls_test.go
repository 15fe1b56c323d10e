package engine_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/internal/wstest"
)

func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _, pool := testserver.SelfSigned(t)
	app := newRecorder()
	app.onMessage = func(ep *engine.Endpoint, _ engine.ClientID, typ engine.MessageType, data []byte) {
		_, _ = ep.Broadcast(typ, data)
	}
	srv, url := start(t, engine.Config{TLSCertFile: certFile, TLSKeyFile: keyFile}, app, func(s *engine.Server) {
		_ = s.Handle("/test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "<h1>It works!</h1>")
		}))
	})
	addr := srv.Addr().String()
	cfg := &tls.Config{RootCAs: pool}

	// HTTPS.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	resp, err := hc.Get("https://" + addr + "/test")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "<h1>It works!</h1>" {
		t.Fatalf("https /test: %d %q", resp.StatusCode, body)
	}
	// Plain HTTP on a TLS listener gets nowhere.
	if r, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + addr + "/test"); err == nil && r.StatusCode == 200 {
		t.Fatal("plain HTTP served on the TLS listener")
	}

	// wss: two clients, a broadcast of a message bigger than a TLS record,
	// and a clean close.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wssURL := strings.Replace(url, "ws://", "wss://", 1)
	var cs []*wstest.Conn
	for range 2 {
		c, _, err := wstest.DialTLS(ctx, cfg, wssURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		cs = append(cs, c)
		app.next(t, "open")
	}
	big := strings.Repeat("ü", 20000) // 40 KB: several TLS records
	if err := cs[0].WriteText(big); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		if got, err := c.ReadText(); err != nil || got != big {
			t.Fatalf("client %d: %d bytes, %v", i, len(got), err)
		}
	}
	if err := cs[1].WriteClose(1000, "bye"); err != nil {
		t.Fatal(err)
	}
	if ce, err := cs[1].ExpectClose(); err != nil || ce.Code != 1000 {
		t.Fatalf("close: %+v, %v", ce, err)
	}
	if e := app.next(t, "close"); e.code != 1000 || e.reason != "bye" {
		t.Fatalf("OnClose %+v", e)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	for _, cfg := range []engine.Config{{TLSCertFile: "x.pem"}, {TLSKeyFile: "y.pem"}} {
		_, err := engine.New(cfg)
		var ce *engine.ConfigError
		if !errors.As(err, &ce) || ce.Field != "TLSCertFile" || !errors.Is(err, engine.ErrInvalidConfig) {
			t.Errorf("%+v: %v, want a ConfigError for TLSCertFile", cfg, err)
		}
	}
	if _, err := engine.New(engine.Config{TLSCertFile: "/nonexistent.pem", TLSKeyFile: "/nonexistent.key"}); err == nil ||
		!strings.Contains(err.Error(), "/nonexistent.pem") {
		t.Errorf("missing files: %v", err)
	}
}

// TestTLSQueueAccounting: with TLS the send queue counts ciphertext on both
// sides, so once a client has read everything its queue is exactly empty.
// It used to count plaintext sent against ciphertext written: 22-29 bytes
// of drift per write, the queue going ever more negative (-440 KB after
// 20,000 messages) and the slow-consumer limits no longer biting.
func TestTLSQueueAccounting(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _, pool := testserver.SelfSigned(t)
	app := newRecorder()
	srv, url := start(t, engine.Config{TLSCertFile: certFile, TLSKeyFile: keyFile}, app)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := wstest.DialTLS(ctx, &tls.Config{RootCAs: pool}, strings.Replace(url, "ws://", "wss://", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	id := app.next(t, "open").id
	ep := app.endpoint()
	small, big := []byte("hello, tls"), []byte(strings.Repeat("x", 40000)) // one record; three
	for i := range 2000 {
		msg := small
		if i%100 == 0 {
			msg = big
		}
		if err := ep.Send(id, engine.Text, msg); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ReadText(); err != nil { // one write each
			t.Fatal(err)
		}
	}
	poll.Within(t, 10*time.Second, "the queue to drain", func() bool { return engine.QueuedOf(ep, id) == 0 })
	if q := srv.Stats().QueuedBytes; q != 0 {
		t.Fatalf("server queue %d bytes after every message was read", q)
	}
}

// TestConfigErrors: Validate names the field at fault in a ConfigError.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg   engine.Config
		field string
	}{
		{engine.Config{Addr: "nocolon"}, "Addr"},
		{engine.Config{Writers: -1}, "Writers"},
		{engine.Config{MaxMessageSize: engine.MaxMessageSizeLimit + 1}, "MaxMessageSize"},
		{engine.Config{SendQueueSoftLimit: 10, SendQueueHardLimit: 5}, "SendQueueSoftLimit"},
		{engine.Config{HeartbeatInterval: time.Millisecond}, "HeartbeatInterval"},
		{engine.Config{CompressionLevel: 10}, "CompressionLevel"},
		{engine.Config{AllowedOrigins: []string{"evil.example"}}, "AllowedOrigins"},
		{engine.Config{MaxPendingInputTotal: 1, MaxPendingInput: 2}, "MaxPendingInputTotal"},
	} {
		err := tc.cfg.Validate()
		var ce *engine.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, engine.ErrInvalidConfig) {
			t.Errorf("%+v: %v, want a ConfigError for %s", tc.cfg, err, tc.field)
		}
	}
	if err := (&engine.Config{}).Validate(); err != nil {
		t.Errorf("the zero Config: %v", err)
	}
}
