package engine_test

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
)

// countingHandler counts deliveries to the pool's clients and signals when
// the count reaches want.
type countingHandler struct {
	n, want atomic.Int64
	reached chan struct{}
}

func (h *countingHandler) OnMessage(int, []byte) {
	if h.n.Add(1) == h.want.Load() {
		h.reached <- struct{}{}
	}
}

func (h *countingHandler) OnClose(int, int, error) {}

// BenchmarkLoopbackBroadcast broadcasts to real clients over loopback: the
// clients are nbio connections in this process, so they share the CPU with
// the server, as on a one-machine test. It reports deliveries per second,
// writes per delivery (the syscalls the batching saves) and frames per
// write, from the server's own counters.
func BenchmarkLoopbackBroadcast(b *testing.B) {
	for _, n := range []int{1000, 4000} {
		for _, burst := range []int{1, 100} {
			b.Run(fmt.Sprintf("recipients=%d/burst=%d/size=64B", n, burst), func(b *testing.B) {
				app := newRecorder()
				srv, url := start(b, engine.Config{}, app)
				h := &countingHandler{reached: make(chan struct{}, 1)}
				dialPool(b, url, n, h)
				poll.Within(b, 30*time.Second, "every client open", func() bool { return srv.Stats().Clients == n })
				ep := app.endpoint()
				msg := make([]byte, 64)
				before := srv.Stats()
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for i := 0; i < b.N; i++ {
					h.want.Add(int64(n * burst))
					for k := range burst {
						binary.BigEndian.PutUint64(msg, uint64(k))
						_, _ = ep.Broadcast(engine.Binary, msg)
					}
					select {
					case <-h.reached:
					case <-time.After(time.Minute):
						b.Fatalf("delivered %d of %d", h.n.Load(), h.want.Load())
					}
				}
				elapsed := time.Since(start)
				b.StopTimer()
				after := srv.Stats()
				deliveries := float64(after.Deliveries - before.Deliveries)
				writes := float64(after.Writes - before.Writes)
				b.ReportMetric(deliveries/elapsed.Seconds(), "deliveries/s")
				b.ReportMetric(writes/deliveries, "writes/delivery")
				b.ReportMetric(deliveries/writes, "frames/write")
			})
		}
	}
}
