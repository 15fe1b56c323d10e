package loadtest

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"

	"github.com/parleyhq/parley/internal/bufpool"
)

// maxInflated bounds a message inflated from a server.
const maxInflated = 16 << 20

// inflateTail ends a compressed message for the inflater (RFC 7692
// 7.2.2): the 00 00 ff ff the server removed, then an empty final block.
var inflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// inflater is a pooled flate reader over a message and inflateTail.
type inflater struct {
	r        io.ReadCloser
	in, tail bytes.Reader
}

func (f *inflater) Read(p []byte) (int, error) {
	if f.in.Len() > 0 {
		return f.in.Read(p)
	}
	return f.tail.Read(p)
}

func (f *inflater) ReadByte() (byte, error) {
	if f.in.Len() > 0 {
		return f.in.ReadByte()
	}
	return f.tail.ReadByte()
}

var inflaters = sync.Pool{New: func() any { return new(inflater) }}

var errInflate = errors.New("loadtest: a compressed message does not inflate")

// inflate returns the message a server compressed (without context
// takeover, as the clients ask), in a pooled buffer.
func inflate(in []byte) (*[]byte, error) {
	f := inflaters.Get().(*inflater)
	defer inflaters.Put(f)
	f.in.Reset(in)
	f.tail.Reset(inflateTail)
	if f.r == nil {
		f.r = flate.NewReader(f)
	} else if err := f.r.(flate.Resetter).Reset(f, nil); err != nil {
		return nil, errInflate
	}
	out := bufpool.Get(max(4*len(in), 256))
	for {
		if len(*out) == cap(*out) {
			if len(*out) >= maxInflated {
				bufpool.Put(out)
				return nil, errInflate
			}
			out = bufpool.Grow(out, len(*out))
		}
		n, err := f.r.Read((*out)[len(*out):cap(*out)])
		*out = (*out)[:len(*out)+n]
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			bufpool.Put(out)
			return nil, errInflate
		}
	}
}
