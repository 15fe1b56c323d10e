package engine_test

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/loadtest"
)

// latencyHandler records the delay of each delivery from the send time
// carried in the message, and signals when want deliveries arrived.
type latencyHandler struct {
	n, want atomic.Int64
	reached chan struct{}
	lat     loadtest.Histogram
}

func (h *latencyHandler) OnMessage(_ int, data []byte) {
	h.lat.Record(time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(data))))
	if h.n.Add(1) == h.want.Load() {
		h.reached <- struct{}{}
	}
}

func (h *latencyHandler) OnClose(int, int, error) {}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTrickle sends a steady stream (one message every interval) to a
// room-sized audience, without a flush window (-1) and with 1 and 5 ms. It reports CPU per
// delivery (the whole process: server and its in-process clients), writes
// per delivery and delivery latency, which is what a window trades.
func BenchmarkTrickle(b *testing.B) {
	const recipients = 100
	for _, rate := range []int{500, 4000} {
		for _, window := range []time.Duration{-1, time.Millisecond, 5 * time.Millisecond} {
			benchTrickle(b, recipients, rate, window)
		}
	}
}

func benchTrickle(b *testing.B, recipients, rate int, window time.Duration) {
	interval := time.Second / time.Duration(rate)
	messages := rate // one second of traffic per op
	{
		b.Run(fmt.Sprintf("recipients=%d/rate=%d/window=%v", recipients, rate, window), func(b *testing.B) {
			app := newRecorder()
			srv, url := start(b, engine.Config{FlushWindow: window}, app)
			h := &latencyHandler{reached: make(chan struct{}, 1)}
			dialPool(b, url, recipients, h)
			poll.Within(b, 10*time.Second, "every client open", func() bool { return srv.Stats().Clients == recipients })
			ep := app.endpoint()
			msg := make([]byte, 64)
			before, cpu0 := srv.Stats(), cpuTime()
			b.ResetTimer()
			var sendTime time.Duration
			for range b.N {
				h.want.Add(int64(recipients * messages))
				// Message k is due at start + k*interval; a late tick sends
				// everything due, so the rate is the same in every case.
				t := time.NewTicker(interval)
				begin := time.Now()
				for k := 0; k < messages; {
					<-t.C
					for due := min(messages, int(time.Since(begin)/interval)+1); k < due; k++ {
						binary.BigEndian.PutUint64(msg, uint64(time.Now().UnixNano()))
						_, _ = ep.Broadcast(engine.Binary, msg)
					}
				}
				sendTime += time.Since(begin)
				t.Stop()
				select {
				case <-h.reached:
				case <-time.After(time.Minute):
					b.Fatalf("delivered %d of %d", h.n.Load(), h.want.Load())
				}
			}
			b.StopTimer()
			after, cpu := srv.Stats(), cpuTime()-cpu0
			deliveries := float64(after.Deliveries - before.Deliveries)
			b.ReportMetric(float64(cpu.Nanoseconds())/deliveries, "cpu-ns/delivery")
			b.ReportMetric(float64(after.Writes-before.Writes)/deliveries, "writes/delivery")
			b.ReportMetric(float64(messages*b.N)/sendTime.Seconds(), "msgs/s")
			b.ReportMetric(float64(h.lat.Quantile(0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(h.lat.Quantile(0.99).Microseconds())/1000, "p99-ms")
		})
	}
}
