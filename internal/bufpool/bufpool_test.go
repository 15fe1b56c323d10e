package bufpool

import "testing"

func TestGetCapacity(t *testing.T) {
	for _, n := range []int{0, 1, 64, 65, 1000, 1 << 20, 1<<20 + 1} {
		p := Get(n)
		if len(*p) != 0 || cap(*p) < n {
			t.Fatalf("Get(%d): len %d cap %d", n, len(*p), cap(*p))
		}
		Put(p)
	}
}

func TestGrowKeepsBytes(t *testing.T) {
	p := Get(4)
	*p = append(*p, "abcd"...)
	p = Grow(p, 1000)
	if string(*p) != "abcd" || cap(*p)-len(*p) < 1000 {
		t.Fatalf("Grow: %q cap %d", *p, cap(*p))
	}
	Put(p)
}

func TestPutIgnoresForeignSlices(t *testing.T) {
	b := make([]byte, 0, 100) // not a power of two: dropped
	Put(&b)
	Put(nil)
	p := Get(100)
	if cap(*p) != 128 {
		t.Fatalf("cap = %d, want 128", cap(*p))
	}
}

func TestGetPutAllocatesNothing(t *testing.T) {
	Put(Get(512))
	if n := testing.AllocsPerRun(100, func() { Put(Get(512)) }); n != 0 {
		t.Fatalf("Get+Put allocates %.1f times, want 0", n)
	}
}

func BenchmarkGetPut(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Put(Get(512))
	}
}

func TestCarry(t *testing.T) {
	var c Carry
	// Nothing carried: Join hands data back as it is.
	data := []byte("abcdef")
	if got := c.Join(data); &got[0] != &data[0] {
		t.Fatal("Join copied data with nothing carried")
	}
	c.Keep(data[4:]) // "ef" left over
	got := c.Join([]byte("gh"))
	if string(got) != "efgh" {
		t.Fatalf("Join = %q, want efgh", got)
	}
	c.Keep(got[1:]) // "fgh", a suffix of the carried buffer
	if got := c.Join([]byte("i")); string(got) != "fghi" {
		t.Fatalf("Join = %q, want fghi", got)
	}
	c.Keep(nil)
	if c.p != nil {
		t.Fatal("Keep(nil) did not release the buffer")
	}
}

// Growing a buffer by small appends past the pooled classes must not copy
// it again on every append.
func TestGrowIsGeometric(t *testing.T) {
	p := Get(0)
	moves := 0
	chunk := make([]byte, 64<<10)
	for range 256 { // to 16 MiB, as a 16 MiB frame read 64 KiB at a time
		before := cap(*p)
		p = Grow(p, len(chunk))
		if cap(*p) != before {
			moves++
		}
		*p = append(*p, chunk...)
	}
	if moves > 12 {
		t.Fatalf("%d reallocations to reach 16 MiB, want a logarithmic number", moves)
	}
}
