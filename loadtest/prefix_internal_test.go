package loadtest

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/parleyhq/parley/protocol"
)

// TestFramePrefixes: the prefixes the load generator matches instead of
// decoding are those of the protocol's types as encoding/json writes them
// (the server's encoding), and its requests decode as protocol.Request.
func TestFramePrefixes(t *testing.T) {
	room := "lt-7"
	for _, tc := range []struct {
		name   string
		v      any
		prefix []byte
	}{
		{"join", protocol.Joined{Type: protocol.EventJoin, Room: room}, joinPrefix},
		{"message", protocol.Message{Type: protocol.EventMessage, Room: room}, messagePrefix},
		{"history", protocol.History{Type: protocol.EventHistory, Room: room}, historyPrefix},
		{"reset", protocol.Reset{Type: protocol.EventReset, Room: room}, resetPrefix},
		{"not delivered", protocol.Error{Type: protocol.EventError, Code: protocol.CodeNotDelivered}, undelivered},
		{"say", protocol.Request{Type: protocol.TypeSay, Room: room}, []byte(sayPrefix)},
		{"join request", protocol.Request{Type: protocol.TypeJoin, Room: room}, []byte(joinRequest)},
	} {
		b, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, tc.prefix) {
			t.Errorf("%s: %s does not start with %s", tc.name, b, tc.prefix)
		}
	}
	b, _ := json.Marshal(protocol.Error{Type: protocol.EventError, Code: protocol.CodeNotDelivered,
		Request: &protocol.ReqInfo{Type: protocol.TypeSay, ID: "n.1", Room: room}})
	if !bytes.Contains(b, []byte(sayAnswered+"n.1")) {
		t.Errorf("%s does not hold %s", b, sayAnswered)
	}
	b, _ = json.Marshal(protocol.Error{Type: protocol.EventError, Code: protocol.CodeRateLimited,
		Request: &protocol.ReqInfo{Type: protocol.TypeJoin, Room: room}})
	if !bytes.HasPrefix(b, errorPrefix) || !bytes.Contains(b, []byte(joinAnswered)) {
		t.Errorf("%s does not start with %s or hold %s", b, errorPrefix, joinAnswered)
	}
	cs := &chatState{cfg: Config{RoomSize: 10, TotalClients: 100}, nonce: "abc"}
	var req protocol.Request
	if err := json.Unmarshal(cs.say(nil, 71, 3, 1000), &req); err != nil || req.Type != protocol.TypeSay || req.Room != room {
		t.Errorf("say decodes as %+v, %v", req, err)
	}
}
