package engine_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
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
		if _, err := engine.New(cfg); err == nil || !strings.Contains(err.Error(), "set together") {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
	if _, err := engine.New(engine.Config{TLSCertFile: "/nonexistent.pem", TLSKeyFile: "/nonexistent.key"}); err == nil ||
		!strings.Contains(err.Error(), "/nonexistent.pem") {
		t.Errorf("missing files: %v", err)
	}
}
