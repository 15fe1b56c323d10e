package loadtest

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	// Bucket lower bounds increase strictly and every value maps to a bucket
	// whose range holds it.
	prev := -1
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 1<<30 + 12345, 1 << 45} {
		i := bucketOf(v)
		if i < prev {
			t.Fatalf("bucket of %d = %d, below the previous %d", v, i, prev)
		}
		prev = i
		mid := bucketMid(i)
		if rel := float64(int64(mid)-int64(v)) / float64(max(v, 1)); rel > 0.016 || rel < -0.016 {
			t.Errorf("value %d: bucket %d mid %d, %.2f%% off", v, i, mid, rel*100)
		}
	}
}

func TestHistogramQuantilesAndMerge(t *testing.T) {
	var a, b, all Histogram
	var vals []time.Duration
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		d := time.Duration(r.ExpFloat64() * float64(5*time.Millisecond))
		vals = append(vals, d)
		all.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := a.Quantile(q)
		if diff := float64(got-exact) / float64(exact); diff > 0.02 || diff < -0.02 {
			t.Errorf("q%.3f: %v, exact %v", q, got, exact)
		}
		if all.Quantile(q) != got {
			t.Errorf("q%.3f: merged %v, recorded together %v", q, got, all.Quantile(q))
		}
	}
	if a.Count() != 20000 || a.Max() != vals[len(vals)-1] {
		t.Errorf("count %d max %v, want 20000 and %v", a.Count(), a.Max(), vals[len(vals)-1])
	}
	var empty Histogram
	if empty.Quantile(0.99) != 0 {
		t.Error("empty histogram has a p99")
	}
}
