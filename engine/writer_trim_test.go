package engine

import (
	"testing"
	"time"
	"unsafe"
)

// TestWritersGiveBackMemory: a burst of 200 broadcasts to 10,000 clients
// in one round grows the writers' round buffers to millions of entries;
// within a tick of idle rounds they are back to almost nothing. They used
// to keep their peak for good (17 MB per writer).
func TestWritersGiveBackMemory(t *testing.T) {
	fb := newFanoutBench(t, 10000, func(s *Server) { s.SetTickInterval(20 * time.Millisecond) })
	held := func() int {
		sizes := make(chan int, len(fb.srv.writers))
		for _, w := range fb.srv.writers {
			w.post(job{kind: jobFunc, fn: func() {
				sizes <- cap(w.arena)*int(unsafe.Sizeof(entry{})) + cap(w.dirty)*8 + cap(w.work)*int(unsafe.Sizeof(job{}))
			}})
		}
		n := 0
		for range fb.srv.writers {
			n += <-sizes
		}
		return n
	}
	// Hold the writers in one round while the burst is posted, so that
	// it lands in one round as under load.
	gate := make(chan struct{})
	for _, w := range fb.srv.writers {
		w.post(job{kind: jobFunc, fn: func() { <-gate }})
	}
	payload := make([]byte, 64)
	for range 200 {
		if _, err := fb.ep.Broadcast(Binary, payload); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	fb.sync()
	peak := held()
	if peak < 8<<20 {
		t.Fatalf("the burst held only %d bytes of round buffers: the test does not exercise them", peak)
	}
	deadline := time.Now().Add(10 * time.Second)
	for held() > 64<<10 {
		if time.Now().After(deadline) {
			t.Fatalf("round buffers still hold %d bytes (peak %d) 10 s after the burst", held(), peak)
		}
		fb.sync()
	}
	t.Logf("round buffers: %d bytes at the peak, %d after", peak, held())
}
