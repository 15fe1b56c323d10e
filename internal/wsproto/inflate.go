package wsproto

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"

	"github.com/parleyhq/parley/internal/bufpool"
)

// DeflateTail ends a permessage-deflate message's bytes for an inflater:
// the 00 00 ff ff the sender removed (RFC 7692 7.2.2), then an empty final
// stored block, so that the stream ends cleanly. A sender strips its
// first four bytes.
var DeflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// Inflate's failures.
var (
	ErrInflateTooBig = errors.New("wsproto: inflated message exceeds the size limit")
	ErrBadDeflate    = errors.New("wsproto: compressed message does not inflate")
)

// inflater is a pooled flate reader with its input: a message's bytes,
// then DeflateTail. It is an io.ByteReader, so flate reads it without a
// bufio.Reader of its own.
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

// Inflate returns, in a bufpool buffer, the message of the compressed
// bytes in (a permessage-deflate message, its 00 00 ff ff removed), with
// dict as the sender's earlier output (context takeover; nil for none).
// Past limit bytes it stops with ErrInflateTooBig, after no more than the
// limit's worth of work.
func Inflate(in, dict []byte, limit int) (*[]byte, error) {
	f := inflaters.Get().(*inflater)
	defer inflaters.Put(f)
	f.in.Reset(in)
	f.tail.Reset(DeflateTail)
	if f.r == nil {
		f.r = flate.NewReaderDict(f, dict)
	} else if err := f.r.(flate.Resetter).Reset(f, dict); err != nil {
		return nil, ErrBadDeflate
	}
	out := bufpool.Get(min(max(4*len(in), 512), limit+1))
	for {
		if len(*out) == cap(*out) {
			if len(*out) > limit {
				bufpool.Put(out)
				return nil, ErrInflateTooBig
			}
			out = bufpool.Grow(out, min(len(*out), limit+1-len(*out)))
		}
		n, err := f.r.Read((*out)[len(*out):cap(*out)])
		*out = (*out)[:len(*out)+n]
		if len(*out) > limit {
			bufpool.Put(out)
			return nil, ErrInflateTooBig
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			bufpool.Put(out)
			return nil, ErrBadDeflate
		}
	}
}
