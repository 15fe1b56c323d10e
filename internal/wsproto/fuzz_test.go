package wsproto

import (
	"bytes"
	"testing"
)

// FuzzParseHeader: any bytes parse without panicking, and a parsed header
// never claims more bytes than it was given or than a header can have.
func FuzzParseHeader(f *testing.F) {
	for _, seed := range [][]byte{
		{0x81, 0x05}, {0x82, 126, 0x01, 0x00}, {0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0},
		{0x81, 0x85, 1, 2, 3, 4}, {0x88, 0x02, 0x03, 0xe8}, {0xff, 0xff}, {},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseHeader(b)
		if err != nil {
			return
		}
		if n < 0 || n > len(b) || n > MaxHeaderLen || h.Len < 0 {
			t.Fatalf("ParseHeader(%x) = %+v, %d", b, h, n)
		}
		if n > 0 && h.Masked != (b[1]&0x80 != 0) {
			t.Fatalf("mask bit lost: %x", b)
		}
	})
}

// FuzzFrameRoundTrip: a frame built by the encoder parses back to the same
// opcode, flags and payload, masked or not.
func FuzzFrameRoundTrip(f *testing.F) {
	f.Add(byte(1), true, []byte("hello"), uint32(0x01020304), true)
	f.Add(byte(2), false, bytes.Repeat([]byte{7}, 300), uint32(0), false)
	f.Add(byte(9), true, []byte{}, uint32(0xdeadbeef), true)
	f.Fuzz(func(t *testing.T, op byte, fin bool, payload []byte, key uint32, masked bool) {
		opc := Opcode(op & 0x0f)
		k := [4]byte{byte(key >> 24), byte(key >> 16), byte(key >> 8), byte(key)}
		var b []byte
		if masked {
			b = AppendMaskedFrame(nil, opc, fin, payload, k)
		} else {
			b = AppendHeader(nil, opc, fin, len(payload), false, [4]byte{})
			b = append(b, payload...)
		}
		h, n, err := ParseHeader(b)
		if err != nil || n == 0 {
			t.Fatalf("frame %x does not parse: %v", b, err)
		}
		if h.Op != opc || h.Fin != fin || h.Masked != masked || h.Len != int64(len(payload)) || n+len(payload) != len(b) {
			t.Fatalf("header %+v from op %v fin %v len %d masked %v", h, opc, fin, len(payload), masked)
		}
		got := append([]byte(nil), b[n:]...)
		if masked {
			Mask(got, h.Key, 0)
		}
		if !bytes.Equal(got, payload) {
			t.Fatal("payload changed in the round trip")
		}
	})
}

// FuzzClosePayload: close payloads parse without panicking; what is
// accepted has a valid code and a UTF-8 reason, and encodes back the same.
func FuzzClosePayload(f *testing.F) {
	for _, seed := range [][]byte{{}, {3}, {0x03, 0xe8}, {0x03, 0xe8, 'o', 'k'}, {0x03, 0xed}, {0x03, 0xe8, 0xff}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		code, reason, err := ParseClosePayload(p)
		if err != nil || len(p) == 0 {
			return
		}
		if !ValidCloseCode(code) {
			t.Fatalf("accepted code %d", code)
		}
		if len(p) <= MaxControlPayload && !bytes.Equal(AppendClosePayload(nil, code, reason), p) {
			t.Fatalf("round trip of %x", p)
		}
	})
}
