package engine

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// listener admits connections for nbhttp's accept loop and lets the
// server stop accepting before nbhttp shuts down.
//
// Accept applies the per-address limits to every TCP connection (a refused
// one gets a 429 and is closed), and handles running out of file
// descriptors itself: nbio's loop would retry at once and log every
// failure (23,084 ERROR lines in 30 s were seen), so Accept logs it at
// most once a second with a count, drops the oldest connection that has
// not upgraded, and waits a moment before it tries again.
//
// nbhttp's accept loop retries forever on a closed listener until its own
// shutdown flag is set, so once the socket is closed Accept parks until
// nbhttp closes the listener itself.
type listener struct {
	net.Listener
	srv       *Server
	stopping  atomic.Bool
	parked    chan struct{}
	closeOnce sync.Once
	full      atomic.Uint64 // accepts that failed for want of descriptors
	fullLog   atomic.Int64  // unix ns of the last log of those

	// spare is a descriptor held in reserve (on /dev/null), -1 when
	// released: nbio dups every accepted socket, which at the file limit
	// would fail and reset the client just accepted. Near the limit
	// (within spareMargin of fileLimit), Accept gives it back just before
	// it returns a connection and takes it again on the next call; far
	// from it, that open and close would be two system calls per accept
	// for nothing. Used by the accept goroutine only.
	spare     int
	fileLimit int64 // the soft RLIMIT_NOFILE, read at start and after an accept fails for want of files
}

// spareMargin is how far below the file limit, in admitted connections,
// the listener starts keeping a spare descriptor: room for the process's
// other files (listeners, pollers, logs, the cluster's connections and
// stores, metrics scrapes).
const spareMargin = 512

func newListener(l net.Listener, srv *Server) *listener {
	ln := &listener{Listener: l, srv: srv, parked: make(chan struct{}), spare: -1}
	ln.readFileLimit()
	return ln
}

// readFileLimit reads the soft file limit; 0 (a spare always kept) when it
// cannot be read.
func (l *listener) readFileLimit() {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<40 {
		l.fileLimit = 0
		return
	}
	l.fileLimit = int64(lim.Cur)
}

// nearFileLimit reports whether the admitted connections come within
// spareMargin of the file limit.
func (l *listener) nearFileLimit() bool {
	return l.srv.limits.open.Load()+spareMargin >= l.fileLimit
}

// tooManyFromAddr is the answer to a connection over its address's limits.
const tooManyFromAddr = "429 too many requests: too many connections, or too many new ones, from your address"

// tooManyFromNetwork is the answer to a connection over its network's limit.
const tooManyFromNetwork = "429 too many requests: too many connections from your network"

func (l *listener) Accept() (net.Conn, error) {
	for l.spare < 0 && !l.stopping.Load() && l.nearFileLimit() {
		fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == nil {
			l.spare = fd
		} else if outOfFiles(err) {
			l.outOfFiles(err)
		} else {
			break // no spare: accepting still works, short of the limit
		}
	}
	for {
		c, err := l.Listener.Accept()
		switch {
		case err != nil && l.stopping.Load():
			if l.spare >= 0 {
				_ = syscall.Close(l.spare)
				l.spare = -1
			}
			<-l.parked
			return nil, net.ErrClosed
		case err != nil && outOfFiles(err):
			l.readFileLimit() // lowered since start? Then keep a spare sooner
			l.outOfFiles(err)
			continue
		case err != nil:
			return nil, err
		}
		ok, why := l.srv.limits.admit(c.RemoteAddr().String(), time.Now())
		if ok {
			if l.spare >= 0 {
				_ = syscall.Close(l.spare) // room for nbio's dup of c
				l.spare = -1
			}
			return c, nil
		}
		body := tooManyFromAddr
		if why == "network" {
			l.srv.stats.refusedNet.Add(1)
			body = tooManyFromNetwork
		} else {
			l.srv.stats.refusedAddr.Add(1)
		}
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = fmt.Fprintf(c, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"+
			"Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
		_ = c.Close()
	}
}

// outOfFiles reports an accept error for want of descriptors or memory.
func outOfFiles(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// outOfFiles makes room after a failed accept: the oldest connection that
// has not upgraded (and has had a second to) goes; with none, the loop
// waits for clients to leave.
func (l *listener) outOfFiles(err error) {
	n := l.full.Add(1)
	now := time.Now().UnixNano()
	if last := l.fullLog.Load(); now-last >= int64(time.Second) && l.fullLog.CompareAndSwap(last, now) {
		l.srv.log.Error("accepting connections: out of file descriptors; dropping the oldest connections that have not upgraded",
			"err", err, "failed_accepts", n)
	}
	if l.srv.limits.dropOldestPending(time.Now()) {
		time.Sleep(time.Millisecond) // the dropped socket's descriptor frees as nbio closes it
		return
	}
	time.Sleep(50 * time.Millisecond)
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
	// The spare belongs to the accept goroutine: it releases it as its
	// Accept fails on the closed socket.
	if wasStopping {
		return nil // the socket was closed by stopAccepting
	}
	return err
}

// listenerOptions sets the socket options of the socket about to listen:
// SO_REUSEPORT (Config.ReusePort), and the kernel buffers
// (Config.SocketReadBuffer, SocketWriteBuffer), which every accepted
// socket inherits: one setsockopt at start instead of one or two per
// connection (and the receive window is scaled for them from the
// handshake on).
func (s *Server) listenerOptions(_, _ string, c syscall.RawConn) error {
	type opt struct{ name, value int }
	var opts []opt
	if s.cfg.ReusePort {
		opts = append(opts, opt{unix.SO_REUSEPORT, 1})
	}
	if n := s.cfg.SocketReadBuffer; n > 0 {
		opts = append(opts, opt{unix.SO_RCVBUF, n})
	}
	if n := s.cfg.SocketWriteBuffer; n > 0 {
		opts = append(opts, opt{unix.SO_SNDBUF, n})
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		for _, o := range opts {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.name, o.value); serr != nil {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}
