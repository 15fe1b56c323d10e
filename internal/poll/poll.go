// Package poll waits, in tests, for a condition a server reaches in its
// own time (a counter that moves after the round that counted it, a node
// that hears of another), checking it every few milliseconds until a
// deadline: the one way the project's tests wait on what they cannot be
// told of by an event.
package poll

import (
	"testing"
	"time"
)

// Deadline is how long Until waits.
const Deadline = 10 * time.Second

// interval is how often a condition is checked.
const interval = 5 * time.Millisecond

// Until calls cond until it reports true, and fails t if it has not
// within Deadline; what names the wait in the failure.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Deadline, what, cond)
}

// Within is Until with a deadline of d.
func Within(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(interval)
	}
}
