package engine

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// listener lets the server stop accepting before nbhttp shuts down. nbhttp's
// accept loop retries forever on a closed listener until its own shutdown
// flag is set, so once the socket is closed Accept parks until nbhttp
// closes the listener itself.
type listener struct {
	net.Listener
	stopping  atomic.Bool
	parked    chan struct{}
	closeOnce sync.Once
}

func newListener(l net.Listener) *listener {
	return &listener{Listener: l, parked: make(chan struct{})}
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && l.stopping.Load() {
		<-l.parked
		return nil, net.ErrClosed
	}
	return c, err
}

// stopAccepting closes the socket, so new connections are refused by the
// kernel, without letting nbhttp's accept loop spin.
func (l *listener) stopAccepting() {
	l.stopping.Store(true)
	_ = l.Listener.Close()
}

func (l *listener) Close() error {
	wasStopping := l.stopping.Swap(true)
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.parked) })
	if wasStopping {
		return nil // the socket was closed by stopAccepting
	}
	return err
}

// reusePort sets SO_REUSEPORT on a socket about to listen.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
