package wsproto

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAcceptKey(t *testing.T) {
	// The example of RFC 6455 section 1.3.
	if got, want := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; got != want {
		t.Fatalf("AcceptKey = %q, want %q", got, want)
	}
}

func TestValidKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"dGhlIHNhbXBsZSBub25jZQ==", true},
		{"", false},
		{"short", false},
		{"dGhlIHNhbXBsZSBub25jZQ", false},   // no padding
		{"dGhlIHNhbXBsZSBub25jZSE=", false}, // 17 bytes
		{"dGhlIHNhbXBsZSBub25j!Q==", false}, // not base64
	} {
		if got := ValidKey(tc.key); got != tc.want {
			t.Errorf("ValidKey(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
}

func TestFrameRoundTrip(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for _, n := range []int{0, 1, 7, 8, 9, 125, 126, 127, 0xFFFF, 0x10000, 70000} {
		payload := bytes.Repeat([]byte{'x'}, n)
		for i := range payload {
			payload[i] = byte(i)
		}
		for _, masked := range []bool{false, true} {
			var b []byte
			if masked {
				b = AppendMaskedFrame(nil, OpBinary, true, payload, key)
			} else {
				b = AppendFrame(nil, OpBinary, payload)
			}
			if len(b) != HeaderLen(n, masked)+n {
				t.Fatalf("n=%d masked=%v: frame length %d, want %d", n, masked, len(b), HeaderLen(n, masked)+n)
			}
			// Every prefix shorter than the header must ask for more.
			h, hn, err := ParseHeader(b[:HeaderLen(n, masked)-1])
			if err != nil || hn != 0 {
				t.Fatalf("n=%d: short header parsed as %d bytes, err %v", n, hn, err)
			}
			h, hn, err = ParseHeader(b)
			if err != nil || hn != HeaderLen(n, masked) {
				t.Fatalf("n=%d: ParseHeader = %d, %v", n, hn, err)
			}
			if !h.Fin || h.Op != OpBinary || h.Masked != masked || h.Len != int64(n) || h.RSV != 0 {
				t.Fatalf("n=%d: header %+v", n, h)
			}
			got := append([]byte(nil), b[hn:]...)
			if masked {
				// Unmask in two pieces to exercise the offset.
				half := len(got) / 3
				pos := Mask(got[:half], h.Key, 0)
				Mask(got[half:], h.Key, pos)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("n=%d masked=%v: payload mismatch", n, masked)
			}
		}
	}
}

func TestParseHeaderBadLength(t *testing.T) {
	b := []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}
	if _, _, err := ParseHeader(b); err != ErrBadLength {
		t.Fatalf("err = %v, want ErrBadLength", err)
	}
}

func TestClosePayload(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload []byte
		code    uint16
		reason  string
		err     error
	}{
		{"empty", nil, CodeNoStatus, "", nil},
		{"one byte", []byte{3}, 0, "", ErrCloseLength},
		{"normal", []byte{0x03, 0xE8, 'b', 'y', 'e'}, 1000, "bye", nil},
		{"1005 on the wire", []byte{0x03, 0xED}, 1005, "", ErrCloseCode},
		{"999", []byte{0x03, 0xE7}, 999, "", ErrCloseCode},
		{"private 4000", []byte{0x0F, 0xA0}, 4000, "", nil},
		{"5000", []byte{0x13, 0x88}, 5000, "", ErrCloseCode},
		{"bad utf8", []byte{0x03, 0xE8, 0xff}, 1000, "", ErrCloseUTF8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, reason, err := ParseClosePayload(tc.payload)
			if err != tc.err || code != tc.code || reason != tc.reason {
				t.Fatalf("got %d %q %v, want %d %q %v", code, reason, err, tc.code, tc.reason, tc.err)
			}
		})
	}
	long := strings.Repeat("é", 100) // 200 bytes
	p := AppendClosePayload(nil, 1001, long)
	if len(p) > MaxControlPayload || !utf8.Valid(p[2:]) {
		t.Fatalf("long reason: payload %d bytes, valid UTF-8 %v", len(p), utf8.Valid(p[2:]))
	}
	if got := AppendClosePayload(nil, CodeNoStatus, "x"); len(got) != 0 {
		t.Fatalf("1005 payload = %v, want empty", got)
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	payload := bytes.Repeat([]byte{'a'}, 64)
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		buf = AppendFrame(buf[:0], OpText, payload)
	}
}

func BenchmarkMask(b *testing.B) {
	payload := make([]byte, 4096)
	key := [4]byte{1, 2, 3, 4}
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		Mask(payload, key, 0)
	}
}
