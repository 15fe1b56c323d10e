package engine_test

import (
	"fmt"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkLoopbackWriteFloor measures the physical floor under every
// figure of a one-machine load test: what one small write(2) to a TCP
// socket over loopback costs, and one read(2) of it on the other end, with
// no WebSocket, no Go netpoller and no application around them (raw
// system calls on connected sockets, each written once in turn, as a
// writer's round writes each recipient once). On loopback the sender's
// write also runs the receiver's TCP input, so a write costs more than on
// a network card. The load generator pays the reads on the same cores.
//
// It reports writes/s and reads/s per core (the inverse of each side's
// time per call, on one thread: softirq work on loopback is not always
// charged to the thread's CPU time, so wall time it is; run it on a quiet
// machine) for a 180-byte frame (a chat message as the hub frames
// it) and for 8 such frames coalesced into one write: the reason a
// broadcast batches.
func BenchmarkLoopbackWriteFloor(b *testing.B) {
	const pairs = 1000
	for _, frames := range []int{1, 8} {
		b.Run(fmt.Sprintf("frames=%d/bytes=%d", frames, 180*frames), func(b *testing.B) {
			w, r := loopbackPairs(b, pairs)
			payload := make([]byte, 180*frames)
			buf := make([]byte, 1<<16)
			var writeCPU, readCPU time.Duration
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(pairs, b.N-done)
				t0 := time.Now()
				for i := range n {
					if _, err := syscall.Write(w[i], payload); err != nil {
						b.Fatal(err)
					}
				}
				t1 := time.Now()
				for i := range n {
					for got := 0; got < len(payload); {
						k, err := syscall.Read(r[i], buf)
						if err == syscall.EAGAIN {
							continue // still on its way through the loopback
						}
						if err != nil {
							b.Fatal(err)
						}
						got += k
					}
				}
				writeCPU += t1.Sub(t0)
				readCPU += time.Since(t1)
				done += n
			}
			b.ReportMetric(float64(b.N)/writeCPU.Seconds(), "writes/s/core")
			b.ReportMetric(float64(b.N)/readCPU.Seconds(), "reads/s/core")
			b.ReportMetric(float64(b.N*frames)/(writeCPU+readCPU).Seconds(), "frames/s/core")
		})
	}
}

// loopbackPairs returns the raw descriptors of n connected TCP pairs on
// loopback: writers and readers, closed at the end of the benchmark.
func loopbackPairs(b *testing.B, n int) (w, r []int) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	b.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	fd := func(c net.Conn) int {
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			b.Fatal(err)
		}
		var d int
		_ = raw.Control(func(f uintptr) { d = int(f) })
		return d
	}
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		_ = c.(*net.TCPConn).SetNoDelay(true)
		conns = append(conns, c, s)
		w, r = append(w, fd(s)), append(r, fd(c))
	}
	return w, r
}
