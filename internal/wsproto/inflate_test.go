package wsproto

import (
	"bytes"
	"compress/flate"
	"errors"
	"strings"
	"testing"
)

// deflated compresses msg as a permessage-deflate sender does (with dict
// as its earlier output), without the trailing 00 00 ff ff.
func deflated(t *testing.T, msg, dict []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := flate.NewWriterDict(&b, flate.BestCompression, dict)
	if _, err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b.Bytes(), DeflateTail[:4])
}

func TestInflate(t *testing.T) {
	msg := []byte(strings.Repeat("hello, inflate ", 100))
	out, err := Inflate(deflated(t, msg, nil), nil, len(msg))
	if err != nil || !bytes.Equal(*out, msg) {
		t.Fatalf("Inflate: %d bytes, %v", len(*out), err)
	}
	dict := []byte("a dictionary the sender used before: hello, inflate")
	if out, err := Inflate(deflated(t, msg, dict), dict, len(msg)); err != nil || !bytes.Equal(*out, msg) {
		t.Fatalf("with a dictionary: %v", err)
	}
	if _, err := Inflate(deflated(t, msg, nil), nil, len(msg)-1); !errors.Is(err, ErrInflateTooBig) {
		t.Fatalf("one byte over the limit: %v", err)
	}
	if _, err := Inflate([]byte{0xff, 0xff, 0xff}, nil, 1<<20); !errors.Is(err, ErrBadDeflate) {
		t.Fatalf("not deflate: %v", err)
	}
}
