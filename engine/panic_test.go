package engine_test

import (
	"net/http"
	"testing"

	"github.com/parleyhq/parley/engine"
)

// panicky panics in OnMessage when told to.
type panicky struct {
	engine.BaseApplication
	ep *engine.Endpoint
}

func (p *panicky) OnStart(ep *engine.Endpoint) error { p.ep = ep; return nil }

func (p *panicky) OnHandshake(r *http.Request) (any, error) {
	if r.URL.Query().Get("boom") != "" {
		panic("handshake boom")
	}
	return nil, nil
}

func (p *panicky) OnMessage(id engine.ClientID, typ engine.MessageType, data []byte) {
	if string(data) == "boom" {
		panic("message boom")
	}
	_ = p.ep.Send(id, typ, data) // echo
}

func TestPanicClosesOnlyThatClient(t *testing.T) {
	t.Parallel()
	srv, url := start(t, engine.Config{}, &panicky{})
	victim, bystander := dial(t, url, nil), dial(t, url, nil)
	if err := victim.WriteText("boom"); err != nil {
		t.Fatal(err)
	}
	ce, err := victim.ExpectClose()
	if err != nil || ce.Code != 1011 {
		t.Fatalf("after a panic: %+v, %v; want close 1011", ce, err)
	}
	// Everyone else is served as before.
	if err := bystander.WriteText("still there?"); err != nil {
		t.Fatal(err)
	}
	if got, err := bystander.ReadText(); err != nil || got != "still there?" {
		t.Fatalf("bystander: %q, %v", got, err)
	}
	// A panicking handshake is answered 500 and counted.
	resp, _ := rawHTTP(t, srv.Addr().String(), "GET /ws?boom=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("panicking handshake: %d, want 500", resp.StatusCode)
	}
	if got := srv.Stats().AppPanics; got != 2 {
		t.Fatalf("AppPanics = %d, want 2", got)
	}
}
