package loadtest

import (
	"errors"
	"io"
	"net"
	"sync/atomic"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/parleyhq/parley/internal/bufpool"
	"github.com/parleyhq/parley/internal/wsproto"
)

// conn is one load-generator client: nbhttp's ParserCloser for its socket
// once the upgrade is done. Frames are parsed on the poller goroutine and
// handled there (counting only), so a client costs no goroutine.
type conn struct {
	idx int
	p   *Pool
	nbc *nbio.Conn
	hc  *nbhttp.Conn // wss: nbhttp's wrapper, through which its TLS reader finds the tls.Conn
	w   io.Writer    // where frames go: nbc, or the tls.Conn

	carry bufpool.Carry  // an incomplete frame; poller only
	msg   *[]byte        // a fragmented message so far; poller only
	msgOp wsproto.Opcode // its opcode
	done  bool           // the server's close frame arrived, or the stream broke
	msgZ  bool           // the message is compressed (RSV1 on its first frame)

	deflate bool // permessage-deflate was agreed

	closeCode atomic.Int32 // the server's close code, 0 until one arrives
}

// UnderlayerConn implements nbhttp.ParserCloser.
func (c *conn) UnderlayerConn() net.Conn {
	if c.hc != nil {
		return c.hc
	}
	return c.nbc
}

var errMaskedServerFrame = errors.New("loadtest: masked frame from the server")

// Parse implements nbhttp.ParserCloser: it handles bytes read from the server.
func (c *conn) Parse(data []byte) error {
	if c.done {
		return nil
	}
	c.p.wireIn.Add(int64(len(data)))
	buf := c.carry.Join(data)
	for len(buf) > 0 && !c.done {
		h, hn, err := wsproto.ParseHeader(buf)
		if err != nil {
			c.p.protoErrs.Add(1)
			c.done = true
			c.carry.Release()
			return err
		}
		if hn == 0 || int64(len(buf)-hn) < h.Len {
			break
		}
		if h.Masked {
			c.p.protoErrs.Add(1)
			c.done = true
			c.carry.Release()
			return errMaskedServerFrame
		}
		payload := buf[hn : hn+int(h.Len)]
		buf = buf[hn+int(h.Len):]
		c.frame(&h, payload)
	}
	if c.done {
		buf = nil
	}
	c.carry.Keep(buf)
	return nil
}

func (c *conn) frame(h *wsproto.Header, payload []byte) {
	switch h.Op {
	case wsproto.OpText, wsproto.OpBinary:
		z := c.deflate && h.RSV&4 != 0
		if h.Fin {
			c.message(payload, z)
			return
		}
		c.msgOp, c.msgZ = h.Op, z
		c.msg = bufpool.Get(len(payload))
		*c.msg = append(*c.msg, payload...)
	case wsproto.OpContinuation:
		if c.msg == nil {
			return
		}
		c.msg = bufpool.Grow(c.msg, len(payload))
		*c.msg = append(*c.msg, payload...)
		if h.Fin {
			c.message(*c.msg, c.msgZ)
			bufpool.Put(c.msg)
			c.msg = nil
		}
	case wsproto.OpPing:
		c.write(wsproto.OpPong, payload)
	case wsproto.OpClose:
		code, _, _ := wsproto.ParseClosePayload(payload)
		c.closeCode.Store(int32(code))
		c.done = true
		c.write(wsproto.OpClose, payload) // echo, as RFC 6455 asks; the server then drops the socket
	}
}

// maxInflated bounds a message inflated from a server.
const maxInflated = 16 << 20

// message hands a whole message to the handler, inflated if compressed.
func (c *conn) message(payload []byte, compressed bool) {
	if !compressed {
		c.p.h.OnMessage(c.idx, payload)
		return
	}
	out, err := wsproto.Inflate(payload, nil, maxInflated)
	if err != nil {
		c.p.protoErrs.Add(1)
		return
	}
	c.p.compressedIn.Add(1)
	c.p.h.OnMessage(c.idx, *out)
	bufpool.Put(out)
}

// write sends one masked frame. nbio's Write never blocks.
func (c *conn) write(op wsproto.Opcode, payload []byte) {
	var stack [wsproto.MaxHeaderLen + wsproto.MaxControlPayload]byte
	b := stack[:0]
	if len(payload) > wsproto.MaxControlPayload {
		b = make([]byte, 0, wsproto.MaxHeaderLen+len(payload))
	}
	b = wsproto.AppendMaskedFrame(b, op, true, payload, [4]byte{0x12, 0x34, 0x56, byte(c.idx)})
	_, _ = c.w.Write(b)
}

// CloseAndClean implements nbhttp.ParserCloser; nbhttp calls it once the
// socket is closed.
func (c *conn) CloseAndClean(err error) {
	c.p.open.Add(-1)
	c.p.h.OnClose(c.idx, int(c.closeCode.Load()), err)
}
