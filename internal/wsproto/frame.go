package wsproto

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Opcode is a frame's opcode (RFC 6455 section 5.2).
type Opcode byte

// The opcodes defined by RFC 6455.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// IsControl reports whether op is a control opcode (close, ping, pong or a
// reserved control opcode).
func (op Opcode) IsControl() bool { return op&0x8 != 0 }

// IsReserved reports whether op is not defined by RFC 6455.
func (op Opcode) IsReserved() bool {
	switch op {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
		return false
	}
	return true
}

func (op Opcode) String() string {
	switch op {
	case OpContinuation:
		return "continuation"
	case OpText:
		return "text"
	case OpBinary:
		return "binary"
	case OpClose:
		return "close"
	case OpPing:
		return "ping"
	case OpPong:
		return "pong"
	}
	return fmt.Sprintf("opcode(%#x)", byte(op))
}

// MaxHeaderLen is the longest possible frame header: 2 bytes, an 8-byte
// extended length and a 4-byte masking key.
const MaxHeaderLen = 14

// MaxControlPayload is the largest payload a control frame may carry.
const MaxControlPayload = 125

// Header is a parsed frame header.
type Header struct {
	Fin    bool
	RSV    byte // the three reserved bits, in the low bits (RSV1 = 4)
	Op     Opcode
	Masked bool
	Key    [4]byte
	Len    int64 // payload length
}

// ErrBadLength reports a 64-bit payload length with its most significant bit
// set, or a length not encoded in its minimal form. RFC 6455 requires the
// former to fail the connection; the latter is tolerated by most peers, so
// only the former is reported.
var ErrBadLength = errors.New("wsproto: invalid payload length")

// HeaderLen returns the length of a header for a payload of n bytes.
func HeaderLen(n int, masked bool) int {
	h := 2
	switch {
	case n > 0xFFFF:
		h += 8
	case n > 125:
		h += 2
	}
	if masked {
		h += 4
	}
	return h
}

// ParseHeader parses the frame header at the start of b. It returns the
// header and its length in bytes; n is 0 when b does not yet hold a whole
// header, in which case the caller must wait for more bytes.
func ParseHeader(b []byte) (h Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.RSV = (b[0] >> 4) & 0x7
	h.Op = Opcode(b[0] & 0x0F)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7F; l {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		h.Len = int64(binary.BigEndian.Uint16(b[2:4]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		v := binary.BigEndian.Uint64(b[2:10])
		if v>>63 != 0 {
			return h, 0, ErrBadLength
		}
		h.Len = int64(v)
		n = 10
	default:
		h.Len = int64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, nil
		}
		copy(h.Key[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// AppendHeader appends a frame header for a payload of n bytes. When masked
// is true, key is written as the masking key (the payload must then be
// masked with it by the caller, see Mask).
func AppendHeader(dst []byte, op Opcode, fin bool, n int, masked bool, key [4]byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	var m byte
	if masked {
		m = 0x80
	}
	switch {
	case n > 0xFFFF:
		dst = append(dst, b0, m|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	case n > 125:
		dst = append(dst, b0, m|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, b0, m|byte(n))
	}
	if masked {
		dst = append(dst, key[:]...)
	}
	return dst
}

// AppendFrame appends one whole, unmasked frame (as a server sends it)
// carrying payload.
func AppendFrame(dst []byte, op Opcode, payload []byte) []byte {
	dst = AppendHeader(dst, op, true, len(payload), false, [4]byte{})
	return append(dst, payload...)
}

// AppendMaskedFrame appends one frame masked with key (as a client sends
// it). payload is not modified.
func AppendMaskedFrame(dst []byte, op Opcode, fin bool, payload []byte, key [4]byte) []byte {
	dst = AppendHeader(dst, op, fin, len(payload), true, key)
	start := len(dst)
	dst = append(dst, payload...)
	Mask(dst[start:], key, 0)
	return dst
}

// Mask XORs b in place with key, starting at offset pos of the masked
// stream, and returns the offset after b. Masking and unmasking are the same
// operation; pos lets a payload be unmasked in several pieces.
func Mask(b []byte, key [4]byte, pos int) int {
	if len(b) == 0 {
		return pos
	}
	// Rotate the key so that key[0] applies to b[0].
	var k [4]byte
	for i := range k {
		k[i] = key[(pos+i)&3]
	}
	if len(b) >= 8 {
		k32 := binary.LittleEndian.Uint32(k[:])
		k64 := uint64(k32) | uint64(k32)<<32
		for len(b) >= 8 {
			v := binary.LittleEndian.Uint64(b)
			binary.LittleEndian.PutUint64(b, v^k64)
			b = b[8:]
			pos += 8
		}
	}
	for i := range b {
		b[i] ^= k[i&3]
	}
	return pos + len(b)
}
