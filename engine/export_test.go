package engine

import (
	"syscall"
	"time"
)

// SetTickInterval makes the once-a-second checks (heartbeats, slow
// consumers) run every d, so tests of them finish quickly. Call before Start.
func (s *Server) SetTickInterval(d time.Duration) { s.tickEvery = d }

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// SetReadingOf turns reading of client id's socket off or on, as pausing
// does, and reports whether nbio's poller registration could be changed.
func SetReadingOf(ep *Endpoint, id ClientID, on bool) bool {
	c := ep.lookup(id)
	return c != nil && setReading(c.nbc, on)
}

// QueuedOf returns client id's send-queue count, unclamped (Info shows it
// at least 0).
func QueuedOf(ep *Endpoint, id ClientID) int64 {
	if c := ep.lookup(id); c != nil {
		return c.queued()
	}
	return -1
}

// SocketBuffersOf returns client id's socket's kernel buffer sizes as the
// kernel reports them (SO_RCVBUF, SO_SNDBUF: twice what was set).
func SocketBuffersOf(ep *Endpoint, id ClientID) (rcv, snd int, err error) {
	c := ep.lookup(id)
	if c == nil {
		return 0, 0, ErrUnknownClient
	}
	if rcv, err = syscall.GetsockoptInt(c.nbc.Hash(), syscall.SOL_SOCKET, syscall.SO_RCVBUF); err != nil {
		return 0, 0, err
	}
	snd, err = syscall.GetsockoptInt(c.nbc.Hash(), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	return rcv, snd, err
}
