package engine_test

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/wsproto"
	"github.com/parleyhq/parley/internal/wstest"
)

// BenchmarkTakeoverWindow measures what a context-takeover client costs
// the server once its 32 KiB window is full: heap bytes per client
// (bytes/conn), after a GC, between the clients connected and the clients
// having each sent 48 KiB of compressed text. The clients compress each
// message on its own (a valid stream for a takeover server), so that no
// client-side compressor is counted.
func BenchmarkTakeoverWindow(b *testing.B) {
	const clients = 200
	_, url := start(b, engine.Config{Compression: true, CompressionContextTakeover: true, Writers: 1}, &engine.Echo{})
	d := &deflateClient{}
	var msgs [][]byte
	for i := range 48 {
		msgs = append(msgs, zframe(wsproto.OpText, true, d.compress(b, []byte(fmt.Sprintf("%04d %s", i, bytes.Repeat([]byte(fmt.Sprintf("line %d of a chat. ", i)), 50))))))
	}
	for range b.N {
		conns := make([]*wstest.Conn, clients)
		for i := range conns {
			conns[i], _ = dialExt(b, url, "permessage-deflate")
		}
		before := heapInUse()
		for _, c := range conns {
			for _, m := range msgs {
				if err := c.WriteRaw(m); err != nil {
					b.Fatal(err)
				}
				readData(b, c)
			}
		}
		after := heapInUse()
		b.ReportMetric(float64(after-before)/clients, "bytes/conn")
		for _, c := range conns {
			c.Close()
		}
	}
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
