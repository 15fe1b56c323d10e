package chat

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"

	"github.com/parleyhq/parley/protocol"
)

// FuzzRequest: any frame decodes (or falls back to plain text) without
// panicking, and names pass validation only if they hold allowed
// characters within the length limit.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		`{"type":"say","room":"lobby","text":"hi"}`, `{"type":"join","room":"a-b","since":4}`, `{"type":"nick","nick":"Ünï.c0de"}`,
		`{"type":"dm","to":"x","text":"\u0000"}`, `plain text`, `{`, `{"type":123}`, `  {"type":"history","before":-1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req protocol.Request
		if looksLikeJSON(data) {
			_ = json.Unmarshal(data, &req)
		}
		for _, name := range []string{req.Room, req.Nick, req.To} {
			if validRoom(name) == nil && !allowed(name, "_-", MaxRoomLength) {
				t.Fatalf("room %q accepted", name)
			}
			if validNick(name) == nil && !allowed(name, "_-.", MaxNickLength) {
				t.Fatalf("nick %q accepted", name)
			}
		}
	})
}

func allowed(s, punct string, max int) bool {
	n := 0
	for i, r := range s {
		n++
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || (i > 0 && strings.ContainsRune(punct, r))) {
			return false
		}
	}
	return n > 0 && n <= max
}
