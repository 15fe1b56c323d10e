package engine_test

import (
	"context"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/loadtest"
)

func openFiles(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

type footprint struct {
	goroutines, files int
	heap              uint64
}

func measure(t *testing.T) footprint {
	t.Helper()
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return footprint{goroutines: runtime.NumGoroutine(), files: openFiles(t), heap: m.HeapInuse}
}

// TestChurnLeavesNothingBehind: thousands of connect/disconnect cycles
// while other clients keep talking; afterwards the process (server and
// its in-process clients) has no more goroutines, open files or heap than
// after a short warm-up.
func TestChurnLeavesNothingBehind(t *testing.T) {
	const steady, churners, cycles = 100, 100, 3000
	srv, url := start(t, engine.Config{}, &engine.Echo{})
	h := &countingHandler{reached: make(chan struct{}, 1)}
	pool, err := loadtest.NewPool(loadtest.Config{Targets: []string{url}, Clients: steady + churners, Dialers: 16,
		Logger: testLoggerFor(t)}, h)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool.DialAll(ctx)
	if pool.Connected() != steady+churners {
		t.Fatalf("connected %d: %v", pool.Connected(), pool.Failures())
	}
	churn := func(n int) {
		var wg sync.WaitGroup
		jobs := make(chan int)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					pool.Drop(i)
					if !pool.Redial(ctx, i) {
						t.Errorf("redial of client %d failed", i)
					}
				}
			}()
		}
		stop, talked := make(chan struct{}), make(chan struct{})
		go func() { // the steady clients keep talking meanwhile, each every 10 ms
			defer close(talked)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				for k := range steady {
					if err := pool.Send(k, []byte("still here")); err != nil {
						t.Errorf("steady client %d: %v", k, err)
						return
					}
				}
			}
		}()
		for k := range n {
			jobs <- steady + k%churners
		}
		close(jobs)
		wg.Wait()
		close(stop)
		<-talked
		poll.Within(t, 30*time.Second, "the server to settle", func() bool { return srv.Stats().Clients == steady+churners })
	}
	// Two rounds of churn: pools and buffers may grow in the first, but a
	// leak grows again in the second.
	churn(300) // warm up
	before := measure(t)
	began := time.Now()
	churn(cycles)
	mid := measure(t)
	churn(cycles)
	took := time.Since(began)
	after := measure(t)
	t.Logf("2 x %d cycles in %v; goroutines %d -> %d -> %d, open files %d -> %d -> %d, heap in use %.1f -> %.1f -> %.1f MB; %d messages echoed",
		cycles, took.Round(time.Millisecond), before.goroutines, mid.goroutines, after.goroutines, before.files, mid.files,
		after.files, float64(before.heap)/1e6, float64(mid.heap)/1e6, float64(after.heap)/1e6, h.n.Load())
	if after.goroutines > before.goroutines+10 {
		t.Errorf("goroutines grew from %d to %d", before.goroutines, after.goroutines)
	}
	if after.files > before.files+10 {
		t.Errorf("open files grew from %d to %d", before.files, after.files)
	}
	if after.heap > mid.heap+2<<20 {
		t.Errorf("heap in use grew again in the second round: %d -> %d", mid.heap, after.heap)
	}
}
