package engine_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
)

// TestBadHTTP: requests that are not HTTP, or too big, lose their
// connection; a healthy client on the same server keeps chatting.
func TestBadHTTP(t *testing.T) {
	t.Parallel()
	srv, url := start(t, engine.Config{}, &engine.Echo{})
	healthy := dial(t, url, nil)
	for _, tc := range []struct{ name, req string }{
		{"garbage request line", "HELLO\r\n\r\n"},
		{"bad method", "G@T / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"header without a colon", "GET / HTTP/1.1\r\nHost x\r\n\r\n"},
		{"request over 64 KiB", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			go io.WriteString(nc, tc.req)
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err == nil {
				t.Fatalf("answered %d, want the connection dropped", resp.StatusCode)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection left open: %v", err)
			}
		})
	}
	if err := healthy.WriteText("fine"); err != nil {
		t.Fatal(err)
	}
	if got, err := healthy.ReadText(); err != nil || got != "fine" {
		t.Fatalf("healthy client: %q, %v", got, err)
	}
}
