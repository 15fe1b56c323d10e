package chat

import (
	"encoding/json"
	"testing"

	"github.com/parleyhq/parley/protocol"
)

// BenchmarkDecodeRequest: the cost of reading a say, strictly (what the
// hub does) and with encoding/json's lenient Unmarshal (what it did).
func BenchmarkDecodeRequest(b *testing.B) {
	msg := []byte(`{"type":"say","room":"lobby","id":"k3x9.17.42","text":"hello there, this is a chat message of typical length"}`)
	b.Run("decoder=strict", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			var req protocol.Request
			if err := decodeStrict(msg, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decoder=encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			var req protocol.Request
			if err := json.Unmarshal(msg, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSanitize: what checking a room message from the broker costs
// (strict decoding, the checks a client's say gets, re-encoding), once per
// message per node, whatever the number of recipients.
func BenchmarkSanitize(b *testing.B) {
	h, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	msg := []byte(`{"from":"alice","user":"u-12345","text":"hello there, this is a chat message of typical length","ts":1764547200000,"id":"k3x9.17.42"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	var p published
	for b.Loop() {
		if _, ok := h.sanitize("lobby", msg, &p); !ok {
			b.Fatal("dropped")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "messages/s")
}
