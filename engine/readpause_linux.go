package engine

import (
	"reflect"
	"syscall"

	"github.com/lesismal/nbio"
)

// setReading turns the kernel's readiness reports for c's socket on or
// off in the epoll instance of nbio's poller, so that a paused client is
// not read at all and TCP flow control stops its sender. nbio v1.6.12 has
// no API for this, so its poller's epoll descriptor and its write-interest
// flag are read by reflection (a test fails if its layout changes, and
// the caller then falls back to the socket's low-water mark). nbio
// changes the same registration under the connection's lock (when a
// write must wait for the socket, and when it is done), so this takes
// that lock too; such a change may turn reading back on, which Parse
// notices and answers by pausing again.
func setReading(nbc *nbio.Conn, on bool) bool {
	v := reflect.ValueOf(nbc).Elem()
	p := v.FieldByName("p")
	if !p.IsValid() || p.Kind() != reflect.Pointer || p.IsNil() {
		return false
	}
	epfd, wadded := p.Elem().FieldByName("epfd"), v.FieldByName("isWAdded")
	if !epfd.IsValid() || epfd.Kind() != reflect.Int || !wadded.IsValid() || wadded.Kind() != reflect.Bool {
		return false
	}
	nbc.Lock()
	defer nbc.Unlock()
	if closed, _ := nbc.IsClosed(); closed {
		return true
	}
	events := uint32(syscall.EPOLLERR | syscall.EPOLLHUP | syscall.EPOLLRDHUP)
	if on {
		events |= syscall.EPOLLIN | syscall.EPOLLPRI
	}
	if wadded.Bool() {
		events |= syscall.EPOLLOUT
	}
	fd := nbc.Hash()
	return syscall.EpollCtl(int(epfd.Int()), syscall.EPOLL_CTL_MOD, fd, &syscall.EpollEvent{Fd: int32(fd), Events: events}) == nil
}
