package memtrim

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/cfgerr"
)

// released reads the heap memory returned to the system.
func released() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func run(t *testing.T, tr *Trimmer) (ticks chan [2]uint64) {
	t.Helper()
	ticks = make(chan [2]uint64, 1024)
	tr.onTick = func(quiet int, reclaimable uint64) {
		select {
		case ticks <- [2]uint64{uint64(quiet), reclaimable}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ticks
}

// TestTrimsWhenQuiet: 64 MiB of garbage, then quiet: one trim, which hands
// memory back to the system, and no second one while nothing more gathers.
func TestTrimsWhenQuiet(t *testing.T) {
	tr, err := New(Config{Quiet: 50 * time.Millisecond, Every: 10 * time.Millisecond, QuietRate: 64 << 20,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// No collection until the trim's: the garbage stays in the heap's
	// objects, where neither a collection nor the runtime's background
	// scavenger can take it first (which made the test flaky).
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	garbage := make([][]byte, 64)
	for i := range garbage {
		garbage[i] = make([]byte, 1<<20)
	}
	runtime.KeepAlive(garbage)
	garbage = nil
	before := released()
	ticks := run(t, tr)
	deadline := time.After(30 * time.Second)
	for tr.Trims() == 0 {
		select {
		case <-ticks:
		case <-deadline:
			t.Fatal("no trim within 30 s of going quiet")
		}
	}
	if after := released(); after < before+32<<20 {
		t.Errorf("released %d MiB -> %d MiB: want 32 MiB more at least", before>>20, after>>20)
	}
	if f := tr.Freed(); f < 32<<20 {
		t.Errorf("Freed() = %d MiB, want 32 or more", f>>20)
	}
	// Ten more quiet periods: nothing left to reclaim, so no trim.
	for range 10 * 5 {
		select {
		case <-ticks:
		case <-deadline:
			t.Fatal("the trimmer stopped sampling")
		}
	}
	if n := tr.Trims(); n != 1 {
		t.Errorf("%d trims, want 1", n)
	}
}

// TestNoTrimWhileBusy: with the allocation rate above QuietRate, garbage
// piles up and no trim runs.
func TestNoTrimWhileBusy(t *testing.T) {
	tr, err := New(Config{Quiet: 30 * time.Millisecond, Every: 10 * time.Millisecond, QuietRate: 1 << 20, MinReclaimable: 1})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		for {
			select {
			case <-stop:
				return
			default:
				runtime.KeepAlive(make([]byte, 256<<10)) // far above 1 MiB/s
			}
		}
	}()
	ticks := run(t, tr)
	deadline := time.After(30 * time.Second)
	for range 50 {
		select {
		case <-ticks:
		case <-deadline:
			t.Fatal("the trimmer stopped sampling")
		}
	}
	close(stop)
	<-busy
	if n := tr.Trims(); n != 0 {
		t.Errorf("%d trims while allocating, want 0", n)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{Quiet: -2}, "Quiet"},
		{Config{QuietRate: -1}, "QuietRate"},
		{Config{Every: -time.Second}, "Every"},
	} {
		_, err := New(tc.cfg)
		var ce *cfgerr.Error
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("New(%+v) = %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
}
