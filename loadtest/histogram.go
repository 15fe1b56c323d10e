package loadtest

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram records durations with about 1.5% precision (64 linear
// sub-buckets per power of two, as HDR histograms do) from any number of
// goroutines at once, lock-free. Histograms merge exactly, so workers'
// results add up. The zero value is ready to use.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
}

const (
	subBits     = 6
	sub         = 1 << subBits
	histBuckets = 40*sub + 2*sub // values up to 2^46 ns (about 19 hours)
)

func bucketOf(v uint64) int {
	if v < 2*sub {
		return int(v)
	}
	s := bits.Len64(v) - (subBits + 1)
	i := s*sub + int(v>>uint(s))
	return min(i, histBuckets-1)
}

// bucketMid returns a value inside bucket i: its lower bound plus half its
// width.
func bucketMid(i int) uint64 {
	if i < 2*sub {
		return uint64(i)
	}
	s := i/sub - 1
	m := uint64(i - s*sub)
	return m<<uint(s) + (1<<uint(s))/2
}

// Record adds one duration (negative durations count as zero).
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if int64(v) <= m || h.max.CompareAndSwap(m, int64(v)) {
			return
		}
	}
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	for {
		m, om := h.max.Load(), o.max.Load()
		if om <= m || h.max.CompareAndSwap(m, om) {
			return
		}
	}
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Max returns the largest recorded value, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Quantile returns the value at quantile q (0 < q <= 1), within the
// histogram's precision; 0 if empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(time.Duration(bucketMid(i)), h.Max())
		}
	}
	return h.Max()
}

// Latency summarizes h in milliseconds.
func (h *Histogram) Latency() Latency {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return Latency{
		P50: ms(h.Quantile(0.50)), P90: ms(h.Quantile(0.90)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Max()), Count: h.Count(),
	}
}

// histogramData is a Histogram's state, to move it between processes.
type histogramData struct {
	Counts map[int]uint64 `json:"counts"` // by bucket, non-empty ones only
	Max    int64          `json:"max"`
}

func (h *Histogram) export() histogramData {
	d := histogramData{Counts: map[int]uint64{}, Max: h.max.Load()}
	for i := range h.counts {
		if c := h.counts[i].Load(); c > 0 {
			d.Counts[i] = c
		}
	}
	return d
}

func (h *Histogram) add(d histogramData) {
	for i, c := range d.Counts {
		if i >= 0 && i < histBuckets {
			h.counts[i].Add(c)
			h.n.Add(c)
		}
	}
	for {
		m := h.max.Load()
		if d.Max <= m || h.max.CompareAndSwap(m, d.Max) {
			return
		}
	}
}
