package engine

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestWindowCapacity: a context-takeover client's dictionary is its last
// 32 KiB and never holds more memory than that: append's growth used to
// leave arrays of up to ~45 KiB (about 59 KB per client measured as RSS).
func TestWindowCapacity(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var dict, all []byte
	for i := range 2000 {
		b := make([]byte, 100+rng.IntN(400)) // chat-sized: the window grows by small steps
		if i%500 == 499 {
			b = make([]byte, rng.IntN(3*maxWindow))
		}
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		dict = appendWindow(dict, b)
		all = append(all, b...)
		if want := all[max(0, len(all)-maxWindow):]; !bytes.Equal(dict, want) {
			t.Fatalf("message %d: the window is not the last %d bytes", i, maxWindow)
		}
		if cap(dict) > maxWindow {
			t.Fatalf("message %d: the window holds %d bytes of memory, want at most %d", i, cap(dict), maxWindow)
		}
	}
}
