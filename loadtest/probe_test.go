package loadtest

import "testing"

func TestProbeRoundTrip(t *testing.T) {
	b := appendProbe(nil, 3, 41, 1732460000123456789)
	chatEvent := []byte(`{"type":"message","room":"lobby","seq":9,"from":"guest-1","text":"` + string(b) + `","ts":1}`)
	for _, in := range [][]byte{b, append([]byte("127.0.0.2: "), b...), append([]byte("a: b: "), b...), chatEvent} {
		r, s, ts, ok := parseProbe(in)
		if !ok || r != 3 || s != 41 || ts != 1732460000123456789 {
			t.Fatalf("parseProbe(%q) = %d %d %d %v", in, r, s, ts, ok)
		}
	}
	for _, bad := range []string{"", "1 2", "1 2 x", "hello", "1  2 3", `{"type":"presence","room":"lobby","count":3}`,
		`{"type":"dm","text":"1 2 3"}`} {
		if _, _, _, ok := parseProbe([]byte(bad)); ok {
			t.Errorf("parseProbe(%q) accepted", bad)
		}
	}
}
