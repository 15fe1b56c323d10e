// Package bufpool lends byte slices by size class, so that connections hold
// buffers only while bytes are in flight and return them when done.
//
// Buffers travel as *[]byte, so returning one to the pool allocates nothing.
// Classes are powers of two from 64 bytes to 1 MiB. Larger requests are
// allocated and, when returned, dropped: a rare huge message must not pin
// memory in the pool.
package bufpool

import (
	"math/bits"
	"sync"
)

const (
	minShift = 6  // 64 B
	maxShift = 20 // 1 MiB
)

// pools[i] holds *[]byte of capacity 1<<(minShift+i).
var pools [maxShift - minShift + 1]sync.Pool

func class(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minShift
}

// Get returns a buffer of length 0 and capacity at least n.
func Get(n int) *[]byte {
	c := class(n)
	if c >= len(pools) {
		b := make([]byte, 0, n)
		return &b
	}
	if p, ok := pools[c].Get().(*[]byte); ok {
		*p = (*p)[:0]
		return p
	}
	b := make([]byte, 0, 1<<(minShift+c))
	return &b
}

// Put returns p to the pool; neither p nor its bytes may be used afterwards.
// Buffers whose capacity is not a pool class are dropped.
func Put(p *[]byte) {
	if p == nil {
		return
	}
	c := cap(*p)
	if c < 1<<minShift || c > 1<<maxShift || c&(c-1) != 0 {
		return
	}
	pools[bits.Len(uint(c))-1-minShift].Put(p)
}

// Grow makes room for at least n more bytes in *p, moving its bytes to a
// larger pooled buffer (and returning the old one) if needed. Growth is
// geometric at every size, so filling a buffer by small appends costs
// amortized O(1) per byte even past the pooled classes.
func Grow(p *[]byte, n int) *[]byte {
	if cap(*p)-len(*p) >= n {
		return p
	}
	np := Get(max(len(*p)+n, 2*cap(*p)))
	*np = append(*np, *p...)
	Put(p)
	return np
}
