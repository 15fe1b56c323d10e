package chat

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/internal/wstest"
	"github.com/parleyhq/parley/protocol"
)

// TestRacingMakerNotCharged: a joiner that reaches makeRoom after another
// made the room (the race of joiners to a new room) makes nothing and is
// charged nothing; only the maker is.
func TestRacingMakerNotCharged(t *testing.T) {
	h, err := New(Config{RoomCreateRate: 10, Logger: testserver.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	_, url := testserver.Start(t, engine.Config{}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := wstest.DialWith(ctx, &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetDeadline(time.Now().Add(10 * time.Second))
	var w protocol.Welcome
	if _, raw, err := ws.ReadMessage(); err != nil || json.Unmarshal(raw, &w) != nil {
		t.Fatalf("welcome: %s %v", raw, err)
	}
	for _, typ := range []string{"join", "history"} { // it made the lobby: 9 left
		if _, raw, err := ws.ReadMessage(); err != nil || !json.Valid(raw) {
			t.Fatalf("%s: %s %v", typ, raw, err)
		}
	}
	c := h.client(engine.ClientID(w.ID))
	left := func() float64 {
		k, _ := h.mayCreate(c, time.Now()) // takes one...
		h.refund(k)                        // ...and gives it back
		h.creators.mu.Lock()
		defer h.creators.mu.Unlock()
		return h.creators.m[k].tokens
	}
	before := left()
	r, made, err := h.makeRoom(context.Background(), "lobby", c) // made by then
	if r != nil || made || err != nil {
		t.Fatalf("making a room that exists: %v %v %v", r, made, err)
	}
	if after := left(); after < before {
		t.Fatalf("charged for a room it did not make: %.2f -> %.2f creations left", before, after)
	}
	r, made, err = h.makeRoom(context.Background(), "new", c)
	if !made || err != nil {
		t.Fatalf("making a new room: %v %v", made, err)
	}
	r.mu.Unlock()
	if after := left(); after > before-0.9 {
		t.Fatalf("not charged for the room it made: %.2f -> %.2f creations left", before, after)
	}
}
