package chat

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkHistoryMemory fills the histories of 1,000 rooms with 100
// messages each, as a node of the 100,000-client run holds them (a chat
// line of the load generator's size), and reports the heap each stored
// message keeps (B/stored) and the replay of a full history to a joiner.
func BenchmarkHistoryMemory(b *testing.B) {
	const rooms, perRoom = 1000, 100
	msg := []byte(`{"from":"guest-n3-1234","id":"lt-12345-678","text":"load test 0123456789 0123456789 0123456789 0123456789 0123456789","ts":1764577123456789012}`)
	b.ReportAllocs()
	var held float64
	for i := 0; b.Loop(); i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rs := make([]*room, rooms)
		for j := range rs {
			r := newRoom(fmt.Sprintf("room-%04d", j), nil, historyLimits{count: perRoom, bytes: 64 << 10})
			for seq := int64(1); seq <= perRoom; seq++ {
				r.appendHistory(seq, bytes.Clone(msg), seq)
			}
			rs[j] = r
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held = float64(after.HeapAlloc-before.HeapAlloc) / (rooms * perRoom)
		for _, r := range rs {
			if out, _ := r.history(-1, 0, perRoom); len(out) != perRoom {
				b.Fatalf("replayed %d, want %d", len(out), perRoom)
			}
		}
		runtime.KeepAlive(rs)
	}
	b.ReportMetric(held, "B/stored")
	b.ReportMetric(float64(len(msg)), "B/message")
}
