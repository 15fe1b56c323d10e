package natsbroker

import (
	"strings"
	"testing"
)

// TestToken: tokens are short, distinct for distinct names, and their
// three forms never meet.
func TestToken(t *testing.T) {
	names := []string{"lobby", "a-b_c", "_lobby", "_6c6f626279", "été", strings.Repeat("a", 64),
		strings.Repeat("a", 65), strings.Repeat("𝐀", 32), strings.Repeat("𝐀", 31) + "𝐁", "x.y", "x y", "x*", "x>"}
	seen := map[string]string{}
	for _, n := range names {
		tok := token(n)
		if len(tok) > maxToken || tok == "" {
			t.Errorf("token(%q) = %q: %d bytes", n, tok, len(tok))
		}
		if strings.ContainsAny(tok, ".*> \t/\\") {
			t.Errorf("token(%q) = %q: not a subject token", n, tok)
		}
		if other, ok := seen[tok]; ok {
			t.Errorf("token(%q) = token(%q) = %q", n, other, tok)
		}
		seen[tok] = n
	}
	for n, want := range map[string]string{"lobby": "lobby", "_lobby": "_5f6c6f626279", "été": "_c3a974c3a9"} {
		if got := token(n); got != want {
			t.Errorf("token(%q) = %q, want %q", n, got, want)
		}
	}
	if got := token(strings.Repeat("a", 65)); !strings.HasPrefix(got, "__") || len(got) != 50 {
		t.Errorf("a 65-byte name: %q", got)
	}
}
