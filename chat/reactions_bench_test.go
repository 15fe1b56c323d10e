package chat_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/wstest"
	"github.com/parleyhq/parley/protocol"
)

// BenchmarkReactionStorm: 1,000 reactions a second for a second on one
// message of a room of 1,000 members (from 10 of them, toggling 5 emoji).
// Reported per member and second of the storm: the frames and bytes the
// server wrote (reactions events, and the pings and presence of the
// while), against one frame per reaction per member without coalescing.
// Run with -benchtime=1x: each iteration is a storm of its own.
func BenchmarkReactionStorm(b *testing.B) {
	const members, reactors, rate = 1000, 10, 1000
	hub, srv, url := startChat(b, chat.Config{RateLimit: -1}, engine.Config{MaxConnectionsPerAddr: -1, ConnectRatePerAddr: -1})
	conns := make([]*wstest.Conn, members)
	for i := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, _, err := wstest.DialWith(ctx, &net.Dialer{}, url, nil)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		conns[i] = c
		go func() { // a member reads everything, as fast as it comes
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	say := chattest.Connect(b, url)
	say.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "vote"})
	m := say.Expect("message")
	poll.Until(b, "every member joined", func() bool { return hub.Stats().Members == members+1 })
	emojis := []string{"👍", "👎", "🎉", "❤️", "😂"}
	b.ReportAllocs()
	var frames, bytes uint64
	var elapsed time.Duration
	for b.Loop() {
		before, published := srv.Stats(), hub.Stats().Published
		start := time.Now()
		tick := time.NewTicker(time.Second / rate)
		for i := range rate {
			<-tick.C
			req := `{"type":"react","room":"lobby","seq":` + itoa(uint64(m.Seq)) + `,"emoji":"` + emojis[i%len(emojis)] + `"}`
			if err := conns[i%reactors].WriteText(req); err != nil {
				b.Fatal(err)
			}
		}
		tick.Stop()
		poll.Until(b, "every reaction numbered", func() bool { return hub.Stats().Published == published+rate })
		elapsed += time.Since(start)
		after := srv.Stats()
		frames += after.FramesWritten - before.FramesWritten
		bytes += after.BytesWritten - before.BytesWritten
	}
	secs := elapsed.Seconds()
	b.ReportMetric(float64(frames)/members/secs, "frames/member/s")
	b.ReportMetric(float64(bytes)/members/secs, "bytes/member/s")
	b.ReportMetric(float64(rate), "reactions/s")
}
