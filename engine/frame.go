package engine

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/internal/wsproto"
)

// frame is one encoded WebSocket frame, shared by every recipient. It is
// reference-counted by writer shard, not by recipient: a broadcast posted to
// N shards holds N references, and each shard drops its own after the round
// that wrote it. The last release returns the frame to the pool.
type frame struct {
	buf  []byte
	data bool  // a data message (counted in MessagesOut), not a control frame
	raw  bool  // not a WebSocket frame: the 101 response, not counted per client
	born int64 // unix ns of the send call, for the write-delay histogram
	hdr  int   // the header's length: the payload follows
	refs atomic.Int32

	// The compressed twin for clients with permessage-deflate, made by
	// the first writer that needs it (compressed); f itself when f is not
	// worth compressing.
	zmu sync.Mutex
	z   atomic.Pointer[frame]

	// Recipients of a multicast, resolved once by the caller; each shard
	// picks its own. Capacity is kept across reuse, so steady-state
	// multicasts allocate nothing.
	conns []*conn
}

// maxPooledFrame is the largest frame buffer kept in the pool.
const maxPooledFrame = 64 << 10

var framePool = sync.Pool{New: func() any { return new(frame) }}

func getFrame(size int) *frame {
	f := framePool.Get().(*frame)
	if cap(f.buf) < size {
		f.buf = make([]byte, 0, size)
	}
	f.buf = f.buf[:0]
	return f
}

// newDataFrame encodes one unfragmented data frame with refs references.
func newDataFrame(typ MessageType, payload []byte, refs int32) *frame {
	f := getFrame(wsproto.HeaderLen(len(payload), false) + len(payload))
	f.buf = wsproto.AppendFrame(f.buf, wsproto.Opcode(typ), payload)
	f.data, f.raw, f.hdr = true, false, wsproto.HeaderLen(len(payload), false)
	f.born = time.Now().UnixNano()
	f.refs.Store(refs)
	return f
}

// newUpgradeResponse holds the 101 response for a client, written by its
// writer ahead of anything sent to it; ext, if not empty, is the
// Sec-WebSocket-Extensions agreed.
func newUpgradeResponse(key, ext string) *frame {
	f := getFrame(160 + len(ext))
	f.buf = append(f.buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	f.buf = append(f.buf, wsproto.AcceptKey(key)...)
	if ext != "" {
		f.buf = append(f.buf, "\r\nSec-WebSocket-Extensions: "...)
		f.buf = append(f.buf, ext...)
	}
	f.buf = append(f.buf, "\r\n\r\n"...)
	f.data, f.raw = false, true
	f.refs.Store(1)
	return f
}

// newControlFrame encodes a control frame (payload at most 125 bytes).
func newControlFrame(op wsproto.Opcode, payload []byte, refs int32) *frame {
	f := getFrame(2 + len(payload))
	f.buf = wsproto.AppendFrame(f.buf, op, payload)
	f.data, f.raw = false, false
	f.refs.Store(refs)
	return f
}

// newCloseFrame encodes a close frame; code 1005 gives an empty one.
func newCloseFrame(code StatusCode, reason string, refs int32) *frame {
	f := getFrame(2 + wsproto.MaxControlPayload)
	var p [wsproto.MaxControlPayload]byte
	payload := wsproto.AppendClosePayload(p[:0], uint16(code), reason)
	f.buf = wsproto.AppendFrame(f.buf, wsproto.OpClose, payload)
	f.data, f.raw = false, false
	f.refs.Store(refs)
	return f
}

func (f *frame) release() {
	if f.refs.Add(-1) != 0 {
		return
	}
	clear(f.conns)
	f.conns = f.conns[:0]
	if z := f.z.Load(); z != nil && z != f {
		z.release()
	}
	f.z.Store(nil)
	f.hdr = 0
	if cap(f.buf) > maxPooledFrame {
		f.buf = nil
	}
	framePool.Put(f)
}

// counts returns what f adds to a client's counters: frames, data messages,
// and bytes that are not WebSocket frames.
func (f *frame) counts() (frames, messages, raw uint64) {
	switch {
	case f.raw:
		return 0, 0, uint64(len(f.buf))
	case f.data:
		return 1, 1, 0
	}
	return 1, 0, 0
}
