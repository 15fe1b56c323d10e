package engine

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

// sink stands in for a client socket: it counts writes and, like nbio's
// OnWrittenSize, reports every byte taken at once.
type sink struct {
	c      *conn
	writes int
	bytes  int
}

func (s *sink) Write(b []byte) (int, error) {
	s.writes++
	s.bytes += len(b)
	s.c.onWritten(len(b))
	return len(b), nil
}

// fanoutBench is a server whose writers run and whose endpoint has n
// clients writing into sinks; no sockets, no nbio.
type fanoutBench struct {
	srv   *Server
	ep    *Endpoint
	sinks []*sink
	done  chan struct{}
	mark  func() // posted as a barrier; made once so sync allocates nothing
}

func newFanoutBench(tb testing.TB, n int, setup ...func(*Server)) *fanoutBench {
	// No flush window: these benchmarks measure the CPU cost of the fan-out
	// path, and their barrier would otherwise wait out a window each op.
	// BenchmarkTrickle measures what the window trades.
	srv, err := New(Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), FlushWindow: -1})
	if err != nil {
		tb.Fatal(err)
	}
	ep, err := srv.Mount("/ws", BaseApplication{})
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range setup {
		f(srv)
	}
	for _, w := range srv.writers {
		srv.wg.Add(1)
		go func() {
			defer srv.wg.Done()
			w.run(srv.stop)
		}()
	}
	tb.Cleanup(func() {
		close(srv.stop)
		srv.wg.Wait()
	})
	fb := &fanoutBench{srv: srv, ep: ep, done: make(chan struct{}, len(srv.writers))}
	fb.mark = func() { fb.done <- struct{}{} }
	for i := range n {
		id := ClientID(srv.nextID.Add(1))
		c := &conn{id: id, ep: ep, w: srv.writers[uint64(id)%uint64(len(srv.writers))],
			head: -1, tail: -1, memberIdx: -1, deadlineCleared: true}
		s := &sink{c: c}
		c.out = s
		fb.sinks = append(fb.sinks, s)
		ep.add(c)
		c.w.post(job{kind: jobOpen, c: c})
		_ = i
	}
	fb.sync()
	return fb
}

// sync waits until every writer has written everything posted before.
func (fb *fanoutBench) sync() {
	for _, w := range fb.srv.writers {
		w.post(job{kind: jobFunc, fn: fb.mark})
	}
	for range fb.srv.writers {
		<-fb.done
	}
}

func (fb *fanoutBench) writes() (n int) {
	for _, s := range fb.sinks {
		n += s.writes
	}
	return n
}

// BenchmarkFanout broadcasts bursts of messages to every client. It reports
// deliveries per second, allocations per delivery (process-wide, writers
// included) and writes per recipient per burst: 1 means every recipient got
// the whole burst in one write.
func BenchmarkFanout(b *testing.B) {
	payload := make([]byte, 64)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	for _, n := range []int{1000, 10000} {
		for _, burst := range []int{1, 100} {
			b.Run(fmt.Sprintf("recipients=%d/burst=%d/size=64B", n, burst), func(b *testing.B) {
				fb := newFanoutBench(b, n)
				// Warm the pools and the writers' buffers.
				for range burst {
					_, _ = fb.ep.Broadcast(Text, payload)
				}
				fb.sync()
				writes0 := fb.writes()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				b.ReportAllocs()
				b.SetBytes(int64(len(payload) * burst * n))
				start := time.Now()
				for b.Loop() {
					for range burst {
						_, _ = fb.ep.Broadcast(Text, payload)
					}
					fb.sync()
				}
				elapsed := time.Since(start)
				runtime.ReadMemStats(&m1)
				deliveries := float64(n * burst * b.N)
				b.ReportMetric(deliveries/elapsed.Seconds(), "deliveries/s")
				b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/deliveries, "allocs/delivery")
				b.ReportMetric(float64(fb.writes()-writes0)/float64(n*b.N), "writes/recipient")
				b.ReportMetric(float64(elapsed.Nanoseconds())/deliveries, "ns/delivery")
			})
		}
	}
}

// BenchmarkGroupSend sends to a group of half the clients, as a chat room
// does: the same path as a broadcast, over the group's members.
func BenchmarkGroupSend(b *testing.B) {
	const n = 10000
	fb := newFanoutBench(b, n)
	g := fb.ep.NewGroup()
	members := 0
	for i, s := range fb.sinks {
		if i%2 == 0 {
			_ = g.Add(s.c.id)
			members++
		}
	}
	payload := make([]byte, 64)
	_, _ = g.Send(Text, payload)
	fb.sync()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		_, _ = g.Send(Text, payload)
		fb.sync()
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&m1)
	deliveries := float64(members * b.N)
	b.ReportMetric(deliveries/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/deliveries, "allocs/delivery")
}

// BenchmarkMulticast sends each message to a list of half the clients.
func BenchmarkMulticast(b *testing.B) {
	const n = 10000
	fb := newFanoutBench(b, n)
	ids := make([]ClientID, 0, n/2)
	for i, s := range fb.sinks {
		if i%2 == 0 {
			ids = append(ids, s.c.id)
		}
	}
	payload := make([]byte, 64)
	_, _ = fb.ep.Multicast(ids, Text, payload)
	fb.sync()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		_, _ = fb.ep.Multicast(ids, Text, payload)
		fb.sync()
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&m1)
	deliveries := float64(len(ids) * b.N)
	b.ReportMetric(deliveries/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/deliveries, "allocs/delivery")
}

// BenchmarkSend sends single messages to one client after another.
func BenchmarkSend(b *testing.B) {
	fb := newFanoutBench(b, 1000)
	payload := make([]byte, 64)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = fb.ep.Send(fb.sinks[i%len(fb.sinks)].c.id, Text, payload)
		i++
		if i%1000 == 0 {
			fb.sync()
		}
	}
	fb.sync()
}

// chatMessage is a chat-sized JSON message, as the chat broadcasts.
var chatMessage = []byte(`{"type":"message","room":"lobby","seq":123456,"from":"alice","user":"u-alice-42","text":"Did anyone see the deploy notes? The new build goes out at noon, rollback plan is in the doc.","ts":1764547200123,"id":"k3x9.17.42"}`)

// BenchmarkFanoutCompressed broadcasts a chat-sized JSON message to 1,000
// clients: plain, and with permessage-deflate negotiated by every client
// (the frame compressed once, shared). It reports CPU per delivery (the
// benchmark's wall time over two writer cores) and bytes on the wire per
// delivery; BenchmarkDeflateMessage gives what compressing once per
// recipient would add to each delivery instead.
func BenchmarkFanoutCompressed(b *testing.B) {
	const n = 1000
	for _, z := range []bool{false, true} {
		name := "compression=off"
		if z {
			name = "compression=once"
		}
		b.Run(name, func(b *testing.B) {
			fb := newFanoutBench(b, n, func(s *Server) { s.cfg.Compression = z })
			if z {
				for _, s := range fb.sinks {
					s.c.deflate = &deflateParams{}
				}
			}
			_, _ = fb.ep.Broadcast(Text, chatMessage)
			fb.sync()
			bytes0 := 0
			for _, s := range fb.sinks {
				bytes0 += s.bytes
			}
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				_, _ = fb.ep.Broadcast(Text, chatMessage)
				fb.sync()
			}
			elapsed := time.Since(start)
			bytes1 := 0
			for _, s := range fb.sinks {
				bytes1 += s.bytes
			}
			deliveries := float64(n * b.N)
			b.ReportMetric(float64(elapsed.Nanoseconds())/deliveries, "ns/delivery")
			b.ReportMetric(float64(bytes1-bytes0)/deliveries, "wire-bytes/delivery")
		})
	}
}

// BenchmarkDeflateMessage is the cost of compressing the chat message once:
// what each delivery would cost more if every recipient's copy were
// compressed on its own.
func BenchmarkDeflateMessage(b *testing.B) {
	var d deflaters
	b.ReportAllocs()
	var out []byte
	for b.Loop() {
		out = d.deflate(DefaultCompressionLevel, out[:0], chatMessage)
	}
	b.ReportMetric(float64(len(out)+2)/float64(len(chatMessage)+2), "size-ratio")
}
