package poll_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/poll"
)

// TestUntil: a condition that comes true ends the wait; one that never
// does fails the test once the deadline has passed, naming the wait.
func TestUntil(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	poll.Until(t, "three", func() bool { return n.Load() == 3 })

	ft := &fakeT{TB: t}
	began := time.Now()
	done := make(chan struct{})
	go func() { // Fatalf ends its goroutine, as testing's does
		defer close(done)
		poll.Within(ft, 50*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if ft.msg != "timed out after 50ms waiting for never" || time.Since(began) < 50*time.Millisecond {
		t.Fatalf("failed with %q after %v", ft.msg, time.Since(began))
	}
}

type fakeT struct {
	testing.TB
	msg string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
