package chat

import (
	"encoding/json"
	"testing"
)

// BenchmarkDecodeRequest: the cost of reading a say, strictly (what the
// hub does) and with encoding/json's lenient Unmarshal (what it did).
func BenchmarkDecodeRequest(b *testing.B) {
	msg := []byte(`{"type":"say","room":"lobby","id":"k3x9.17.42","text":"hello there, this is a chat message of typical length"}`)
	b.Run("decoder=strict", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			var req Request
			if err := decodeStrict(msg, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decoder=encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			var req Request
			if err := json.Unmarshal(msg, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
