package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/internal/wsproto"
)

// Flood kinds (Config.FloodKind).
const (
	FloodSay     = "say"     // says of FloodSize bytes in the lobby
	FloodTyping  = "typing"  // typing notices carrying FloodSize bytes of text
	FloodHistory = "history" // history requests for the lobby
	FloodPing    = "ping"    // ping frames of 125 bytes
	FloodMixed   = "mixed"   // all of those in turn
)

// Flood defaults.
const (
	DefaultFlooders  = 2
	DefaultFloodSize = 30000
	maxFlooders      = 1000
)

var floodKinds = []string{FloodSay, FloodTyping, FloodHistory, FloodPing, FloodMixed}

// floodStats counts what the flooders did.
type floodStats struct {
	frames, bytes    atomic.Int64
	connects, closed atomic.Int64
	peakRSS          atomic.Int64
	refusedWhy       sync.Map // cause -> *atomic.Int64
	cfg              Config
	target           *url.URL
}

// floodFrames returns the frames a flooder of kind sends, in turn.
func floodFrames(kind string, size int) [][]byte {
	text := strings.Repeat("x", size)
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	say := wsproto.AppendMaskedFrame(nil, wsproto.OpText, true, []byte(`{"type":"say","room":"lobby","text":"`+text+`"}`), key)
	typing := wsproto.AppendMaskedFrame(nil, wsproto.OpText, true, []byte(`{"type":"typing","room":"lobby","text":"`+text+`"}`), key)
	history := wsproto.AppendMaskedFrame(nil, wsproto.OpText, true, []byte(`{"type":"history","room":"lobby"}`), key)
	ping := wsproto.AppendMaskedFrame(nil, wsproto.OpPing, true, []byte(strings.Repeat("p", wsproto.MaxControlPayload)), key)
	switch kind {
	case FloodSay:
		return [][]byte{say}
	case FloodTyping:
		return [][]byte{typing}
	case FloodHistory:
		return [][]byte{history}
	case FloodPing:
		return [][]byte{ping}
	}
	return [][]byte{say, typing, history, ping}
}

// flood runs cfg.Flooders hostile clients against the first target until
// ctx ends: each upgrades a plain TCP connection, sends its frames as fast
// as the socket takes them, reads and drops whatever comes back, and
// connects again when the server closes it.
func (f *floodStats) flood(ctx context.Context) {
	frames := floodFrames(f.cfg.FloodKind, f.cfg.FloodSize)
	var wg sync.WaitGroup
	for range f.cfg.Flooders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				nc, err := f.dial(ctx)
				if err != nil {
					f.refuse(err.Error())
					select { // a refused flooder tries again soon, as an attacker would
					case <-time.After(50 * time.Millisecond):
					case <-ctx.Done():
					}
					continue
				}
				f.connects.Add(1)
				f.send(ctx, nc, frames)
			}
		}()
	}
	wg.Wait()
}

func (f *floodStats) refuse(why string) {
	v, _ := f.refusedWhy.LoadOrStore(why, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// dial opens and upgrades one flooder connection.
func (f *floodStats) dial(ctx context.Context) (*floodConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", f.target.Host)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", f.target.RequestURI(), f.target.Host)
	br := bufio.NewReaderSize(c, 64<<10)
	status, err := br.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("upgrade: %w", err)
		}
		if line == "\r\n" {
			break
		}
	}
	if fields := strings.Fields(status); len(fields) < 2 || fields[1] != "101" {
		c.Close()
		code := "?"
		if len(fields) >= 2 {
			code = fields[1]
		}
		return nil, fmt.Errorf("upgrade refused with %s", code)
	}
	_ = c.SetDeadline(time.Time{})
	return &floodConn{Conn: c, r: br}, nil
}

// floodConn is an upgraded flooder connection and its buffered reader.
type floodConn struct {
	net.Conn
	r *bufio.Reader
}

// send writes frames in turn until ctx ends or the connection fails; a
// reader drops what the server sends meanwhile.
func (f *floodStats) send(ctx context.Context, c *floodConn, frames [][]byte) {
	defer c.Close()
	go func() { _, _ = io.Copy(io.Discard, c.r) }()
	stop := context.AfterFunc(ctx, func() { _ = c.SetWriteDeadline(time.Now()) })
	defer stop()
	for i := 0; ctx.Err() == nil; i++ {
		b := frames[i%len(frames)]
		if _, err := c.Write(b); err != nil {
			if ctx.Err() == nil {
				f.closed.Add(1)
			}
			return
		}
		f.frames.Add(1)
		f.bytes.Add(int64(len(b)))
	}
}

// samplePeak records the servers' summed RSS every 100 ms until ctx ends.
func (f *floodStats) samplePeak(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		var sum int64
		for _, pid := range f.cfg.ServerPIDs {
			sum += rssOf(strconv.Itoa(pid))
		}
		if sum > f.peakRSS.Load() {
			f.peakRSS.Store(sum)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// result returns what the flooders did.
func (f *floodStats) result() *FloodResult {
	res := &FloodResult{Flooders: f.cfg.Flooders, Kind: f.cfg.FloodKind, Size: f.cfg.FloodSize,
		Frames: f.frames.Load(), Bytes: f.bytes.Load(), Connects: f.connects.Load(),
		ClosedByServer: f.closed.Load(), ServerPeakRSSBytes: f.peakRSS.Load()}
	f.refusedWhy.Range(func(k, v any) bool {
		if res.Refused == nil {
			res.Refused = map[string]int64{}
		}
		res.Refused[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return res
}
