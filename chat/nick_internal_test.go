package chat

import "testing"

func TestSystemKey(t *testing.T) {
	for _, n := range []string{systemNick, "System", "SYSTEM", "systern", "ѕystem"} {
		if k := keyOf(n); k != systemKey {
			t.Errorf("keyOf(%q) = %q, want systemKey %q", n, k, systemKey)
		}
	}
}
