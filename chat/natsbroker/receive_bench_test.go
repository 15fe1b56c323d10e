package natsbroker

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parleyhq/parley/chat"
)

// nopHandler takes a broker's deliveries and does nothing with them.
type nopHandler struct{ got int }

func (h *nopHandler) HandleMessage(string, int64, []byte) { h.got++ }
func (*nopHandler) HandleReset(string, chat.RoomState)    {}
func (*nopHandler) HandleDirect([]byte) error             { return nil }
func (*nopHandler) HandleRule(chat.Rule, bool)            {}
func (*nopHandler) HandleControl([]byte)                  {}
func (*nopHandler) NodeLoad() chat.NodeInfo               { return chat.NodeInfo{} }
func (*nopHandler) HandlePresence(string, string, []byte) {}
func (*nopHandler) HandleNodeGone(string)                 {}

// BenchmarkReceive is a node's receive path for one room message from
// NATS, before the hub (BenchmarkSanitize in chat is the hub's part,
// BenchmarkFanout in engine the writers'), once per message per node that
// has the room: nats.go decoding the headers the stream's republish adds
// (a map and its strings, every message), then the broker reading the
// sequence number and timestamp and ordering the message.
func BenchmarkReceive(b *testing.B) {
	const ring = 1024
	raws := make([][]byte, ring)
	for i := range raws {
		raws[i] = []byte("NATS/1.0\r\nNats-Stream: parley_room_bench\r\nNats-Subject: parley.in.bench\r\n" +
			"Nats-Sequence: " + strconv.Itoa(i+1) + "\r\nNats-Time-Stamp: " + time.Now().UTC().Format(time.RFC3339Nano) +
			"\r\nNats-Last-Sequence: " + strconv.Itoa(i) + "\r\n\r\n")
	}
	data := []byte(`{"from":"guest-n1-1","text":"hello there, this is a chat message of typical length","ts":1764547200000,"id":"k3x9.17.42"}`)
	b.Run("part=headers", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := nats.DecodeHeadersMsg(raws[i%ring]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("part=broker", func(b *testing.B) {
		msgs := make([]*nats.Msg, ring)
		for i := range msgs {
			hdr, err := nats.DecodeHeadersMsg(raws[i])
			if err != nil {
				b.Fatal(err)
			}
			msgs[i] = &nats.Msg{Subject: "parley.room.bench", Header: hdr, Data: data}
		}
		br := &Broker{}
		rs := &roomSub{name: "bench", ready: true}
		h := &nopHandler{}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if i%ring == 0 {
				rs.last = 0
			}
			br.roomMessage(h, rs, msgs[i%ring])
			i++
		}
		if h.got != i {
			b.Fatalf("%d of %d delivered", h.got, i)
		}
	})
}
