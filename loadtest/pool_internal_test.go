package loadtest

import (
	"net/url"
	"testing"
)

// TestReconnectTargets: the clients of a target that goes away spread
// evenly over the others, and each keeps trying all of the others.
func TestReconnectTargets(t *testing.T) {
	const n, clients = 7, 7000
	p := &Pool{targets: make([]*url.URL, n), shift: make([]uint8, clients)}
	moved := make([]int, n)
	for i := 3; i < clients; i += n { // the clients of target 3
		if got := p.target(i); got != 3 {
			t.Fatalf("client %d starts on %d, want 3", i, got)
		}
		tried := map[int]bool{}
		for a := 1; a < n; a++ {
			p.shift[i] = uint8(a)
			tried[p.target(i)] = true
			if a == 1 {
				moved[p.target(i)]++
			}
		}
		if len(tried) != n-1 || tried[3] {
			t.Fatalf("client %d tries %v, want every target but 3", i, tried)
		}
	}
	for k, m := range moved {
		if k != 3 && m != clients/n/(n-1) && m != clients/n/(n-1)+1 {
			t.Fatalf("first reconnections per target: %v, want an even spread", moved)
		}
	}
}
