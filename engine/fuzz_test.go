package engine

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/wsproto"
)

// FuzzCheckUpgrade: any upgrade request is answered without panicking, and
// only a well-formed one (GET, HTTP/1.1, Upgrade websocket, Connection
// upgrade, version 13, a valid key) passes.
func FuzzCheckUpgrade(f *testing.F) {
	f.Add("GET", "websocket", "Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ==", "http://h")
	f.Add("POST", "websocket", "keep-alive, Upgrade", "13", "x", "")
	f.Add("GET", "h2c", "Upgrade", "8", "", "null")
	s, err := New(Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, upgrade, connection, version, key, origin string) {
		r := httptest.NewRequest(http.MethodGet, "http://h/ws", nil)
		r.Method = method
		r.Header = http.Header{"Upgrade": {upgrade}, "Connection": {connection}, "Sec-Websocket-Version": {version},
			"Sec-Websocket-Key": {key}, "Origin": {origin}}
		w := httptest.NewRecorder()
		ok := s.checkUpgrade(w, r)
		_ = s.originAllowed(r)
		wellFormed := method == http.MethodGet && hasToken(r.Header, "Upgrade", "websocket") &&
			hasToken(r.Header, "Connection", "upgrade") && strings.TrimSpace(version) == "13" && wsproto.ValidKey(key)
		if ok != wellFormed {
			t.Fatalf("checkUpgrade = %v for %q %q %q %q %q", ok, method, upgrade, connection, version, key)
		}
		if !ok && w.Code < 400 {
			t.Fatalf("refused with status %d", w.Code)
		}
	})
}
