package engine

import (
	"testing"
	"unsafe"
)

// TestConnSize: an idle connection's engine struct stays in the 352-byte
// size class (it was 448: six atomic bools now share a word, the poller's
// three rate buckets a clock, the remote address is asked of the socket
// instead of kept as a string, and the small fields fill the padding). A
// field that pushes it over costs every idle client the next class.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 352 {
		t.Fatalf("conn is %d bytes, over its 352-byte size class", n)
	}
}

// TestRatesShareAClock: the three buckets refill together, each at its own
// rate, and a rate that is off leaves its bucket alone.
func TestRatesShareAClock(t *testing.T) {
	cfg := &Config{MaxMessagesPerSecond: 10, MaxPingsPerSecond: 2, MaxBytesPerSecond: 1000}
	var r rates
	const sec = int64(1e9)
	now := 100 * sec
	for i := range 10 {
		if !r.take(&r.msgs, 1, cfg.MaxMessagesPerSecond, cfg, now) {
			t.Fatalf("message %d refused within the burst", i)
		}
	}
	if r.take(&r.msgs, 1, cfg.MaxMessagesPerSecond, cfg, now) {
		t.Fatal("an 11th message in the same instant was allowed")
	}
	if !r.take(&r.pings, 2, cfg.MaxPingsPerSecond, cfg, now) || r.take(&r.pings, 1, cfg.MaxPingsPerSecond, cfg, now) {
		t.Fatal("pings: want 2 allowed, then refused")
	}
	if !r.take(&r.bytes, 900, cfg.MaxBytesPerSecond, cfg, now) || r.take(&r.bytes, 200, cfg.MaxBytesPerSecond, cfg, now) {
		t.Fatal("bytes: want 900 allowed, then 200 refused")
	}
	// Half a second later, through a bucket of another kind: every bucket
	// has refilled by half a second's worth.
	now += sec / 2
	if !r.take(&r.bytes, 500, cfg.MaxBytesPerSecond, cfg, now) {
		t.Fatal("bytes: 500 refused after half a second")
	}
	for i := range 5 {
		if !r.take(&r.msgs, 1, cfg.MaxMessagesPerSecond, cfg, now) {
			t.Fatalf("message %d refused after half a second", i)
		}
	}
	if r.take(&r.msgs, 1, cfg.MaxMessagesPerSecond, cfg, now) || !r.take(&r.pings, 1, cfg.MaxPingsPerSecond, cfg, now) || r.take(&r.pings, 1, cfg.MaxPingsPerSecond, cfg, now) {
		t.Fatal("after half a second: want 5 messages and 1 ping, no more")
	}
	off := &Config{MaxMessagesPerSecond: 10}
	r = rates{}
	r.take(&r.msgs, 10, off.MaxMessagesPerSecond, off, now)
	if !r.take(&r.msgs, 1, off.MaxMessagesPerSecond, off, now+sec) || r.bytes != 0 || r.pings != 0 {
		t.Fatalf("with the other rates off: %+v", r)
	}
}
