package engine

import (
	"errors"
	"io"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/parleyhq/parley/internal/bufpool"
	"github.com/parleyhq/parley/internal/wsproto"
)

// conn is one upgraded WebSocket client. It is nbhttp's ParserCloser for its
// socket: the poller hands it raw bytes (Parse) and the executor tells it
// the socket is gone (CloseAndClean).
//
// Its fields fall in four groups by owner: the read state is under readMu
// (the poller's, but resuming a paused client parses from the executor),
// the writer fields belong to its writer shard, the counters are atomics
// read by Info, and the close state is under mu.
type conn struct {
	id          ClientID
	ep          *Endpoint
	nbc         *nbio.Conn
	hc          *nbhttp.Conn // nbhttp's wrapper, through which it finds the TLS layer
	out         io.Writer    // where the writer sends c's bytes: nbc, its TLS conn, or a sink in benchmarks
	w           *writer
	connectedAt int64          // unix ns
	deflate     *deflateParams // permessage-deflate as negotiated; nil: none

	// Read state, under readMu.
	// (The small fields sit together: an idle client's struct stays in
	// its allocation size class.)
	readMu sync.Mutex
	carry  bufpool.Carry  // bytes of an incomplete frame (or, while paused, unparsed input)
	msg    *[]byte        // a fragmented message so far, nil when none
	fed    int32          // payload bytes of the incomplete frame already validated (a frame is at most the message limit)
	msgOp  wsproto.Opcode // that message's opcode
	text   wsproto.UTF8   // the text message's validation so far
	msgZ   bool           // the message is compressed (RSV1 on its first frame)
	paused bool           // the socket is not read: too much input waits for the application
	failed bool           // we failed the client: only its close reply matters now
	done   bool           // input is ignored: the peer closed, or the stream is beyond parsing

	// Two fields of others fill the read state's last word: set at the
	// upgrade, read by the writer; under mu.
	tlsOverhead int16  // TLS bytes per record (queue accounting)
	closeCode   uint16 // a StatusCode reported to OnClose; 0 until known

	rates    rates  // MaxMessagesPerSecond, MaxPingsPerSecond, MaxBytesPerSecond
	inflRate bucket // MaxInflatedBytesPerSecond (on the executor, not under readMu)
	skip     int64  // payload bytes still to discard (while failed)

	// Bytes of messages handed to the application and not yet handled
	// (Config.MaxPendingInput).
	pendingIn atomic.Int64

	// Counters.
	bytesIn, framesIn, msgsIn    atomic.Uint64
	bytesOut, framesOut, msgsOut atomic.Uint64
	lastRead, lastWrite          atomic.Int64 // unix ns

	// Queue accounting: bytes handed to the socket minus bytes it took.
	// With TLS both are ciphertext: the writer adds tlsOverhead per record.
	sent, written atomic.Int64

	flags   connFlags // opened, ready, closing, appClosed, closeOnDrain, gone: one word, not six
	scanned int32     // under readMu: bytes read since the server began closing c (saturating)

	mu          sync.Mutex
	closeReason string
	closeTimer  *time.Timer

	// Writer state: the owning writer's goroutine only.
	head, tail int32 // pending frames, as a list in the writer's arena; -1 when none
	memberIdx  int32 // index in ep.members[w.idx]; -1 when not a member

	// Four bools fill memberIdx's word, whoever owns them: the struct
	// fills its allocation size class (352 bytes) with no padding.
	closeWrote      bool // under mu: our close frame went to the socket
	peerClosed      bool // under mu: the peer's close frame arrived
	closeEnqueued   bool // writer: the close frame is queued, no data may follow
	deadlineCleared bool // writer

	pendingBytes int         // writer
	groups       []groupSlot // writer: the groups c is in
	pingSentAt   int64       // writer
	backlogSince int64       // writer
}

// The bits of connFlags.
const (
	flagOpened       uint32 = 1 << iota // OnOpen ran, so OnClose must
	flagReady                           // OnOpen returned: an Inline endpoint may call OnMessage on the poller
	flagClosing                         // a close frame is queued: no data may follow
	flagAppClosed                       // the application closed the client (Endpoint.Close)
	flagCloseOnDrain                    // drop the socket once sent == written
	flagGone                            // the socket is closed
)

// connFlags are a connection's atomic booleans in one word.
type connFlags struct{ v atomic.Uint32 }

// Load reports whether bit is set.
func (f *connFlags) Load(bit uint32) bool { return f.v.Load()&bit != 0 }

// Store sets or clears bit.
func (f *connFlags) Store(bit uint32, on bool) {
	if on {
		f.v.Or(bit)
	} else {
		f.v.And(^bit)
	}
}

// CompareAndSwap sets bit to to if it is from, and reports whether it did.
func (f *connFlags) CompareAndSwap(bit uint32, from, to bool) bool {
	for {
		old := f.v.Load()
		if (old&bit != 0) != from {
			return false
		}
		next := old &^ bit
		if to {
			next |= bit
		}
		if f.v.CompareAndSwap(old, next) {
			return true
		}
	}
}

// UnderlayerConn implements nbhttp.ParserCloser; nbhttp's TLS reader finds
// the TLS connection through it.
func (c *conn) UnderlayerConn() net.Conn {
	if c.hc != nil {
		return c.hc
	}
	return c.nbc
}

// remote returns the client's address, host:port, as the limits and Info
// know it (net.Addr.String of its socket); "" for a connection without one
// (benchmarks' sinks). Computed when asked: a string kept per connection
// cost every idle client 32 bytes.
func (c *conn) remote() string {
	if c.nbc == nil {
		return ""
	}
	a := c.nbc.RemoteAddr()
	if a == nil {
		return ""
	}
	return a.String()
}

// addr returns the client's address and port without allocating (the zero
// AddrPort for a connection without one).
func (c *conn) addr() netip.AddrPort {
	if c.nbc == nil {
		return netip.AddrPort{}
	}
	switch a := c.nbc.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	default:
		ap, _ := netip.ParseAddrPort(a.String())
		return ap
	}
}

// queued returns the bytes handed to the socket that it has not yet taken.
func (c *conn) queued() int64 { return c.sent.Load() - c.written.Load() }

// Parse implements nbhttp.ParserCloser. It runs on the poller goroutine with
// bytes read from the socket, which it may modify but not keep.
func (c *conn) Parse(data []byte) error {
	now := time.Now().UnixNano()
	c.lastRead.Store(now)
	c.bytesIn.Add(uint64(len(data)))
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.done {
		return nil
	}
	if c.paused {
		// The socket is paused, but the kernel woke us anyway: it does
		// when a receive buffer is nearly full, so that no socket stalls
		// for good, and when the peer closes. Keep the bytes unparsed,
		// up to a bound.
		c.stopReading() // nbio may have turned reading back on
		buf := c.carry.Join(data)
		if len(buf) > c.ep.pausedLimit {
			// It kept sending into the paused socket: close it, reading
			// on only for its close frame.
			c.ep.srv.stats.rateLimited.Add(1)
			c.resume()
			c.fail(StatusPolicyViolation, "input arrives faster than it is handled")
			buf = c.awaitClose(buf)
			if c.done {
				buf = nil
			}
		}
		c.carry.Keep(buf)
		return nil
	}
	c.parse(data, now)
	return nil
}

// parse reads frames from the carried bytes and data. Callers hold readMu.
func (c *conn) parse(data []byte, now int64) {
	if !c.failed && c.flags.Load(flagClosing) {
		// The server is closing c (the application asked, or shutdown):
		// what c sends now is not handed on, only scanned for its close
		// reply. A flooder closed by the rate limit used to have every
		// request it had in flight decoded and refused until CloseTimeout.
		c.failed = true
		c.dropMessage()
	}
	cfg := &c.ep.srv.cfg
	if cfg.MaxBytesPerSecond > 0 && !c.failed && !c.rates.take(&c.rates.bytes, float64(len(data)), cfg.MaxBytesPerSecond, cfg, now) {
		c.ep.srv.stats.rateLimited.Add(1)
		c.fail(StatusPolicyViolation, "byte rate limit exceeded")
	}
	buf := c.carry.Join(data)
	for len(buf) > 0 && !c.failed && !c.done {
		h, hn, err := wsproto.ParseHeader(buf)
		if err != nil {
			c.fail(StatusProtocolError, "invalid frame length")
			break
		}
		if hn == 0 {
			break
		}
		if code, reason := c.checkHeader(&h); code != 0 {
			if h.Op == wsproto.OpClose {
				c.failClose(code, reason)
			} else {
				c.fail(code, reason)
			}
			break
		}
		if int64(len(buf)-hn) < h.Len {
			c.validatePartial(&h, buf[hn:])
			break
		}
		end := hn + int(h.Len)
		payload := buf[hn:end]
		wsproto.Mask(payload, h.Key, 0)
		buf = buf[end:]
		c.framesIn.Add(1)
		if cfg.MaxMessagesPerSecond > 0 && !c.rates.take(&c.rates.msgs, 1, cfg.MaxMessagesPerSecond, cfg, now) {
			c.ep.srv.stats.rateLimited.Add(1)
			c.fail(StatusPolicyViolation, "message rate limit exceeded")
			break
		}
		if h.Op == wsproto.OpPing && cfg.MaxPingsPerSecond > 0 && !c.rates.take(&c.rates.pings, 1, cfg.MaxPingsPerSecond, cfg, now) {
			// Each ping costs a pong: eight clients pinging as fast as
			// they could took a healthy client's p99 to 128 ms.
			c.ep.srv.stats.rateLimited.Add(1)
			c.fail(StatusPolicyViolation, "ping rate limit exceeded")
			break
		}
		c.handleFrame(&h, payload)
		if c.paused {
			break // the rest waits until the application catches up
		}
	}
	if c.failed && !c.done {
		if c.stopScanning(len(buf)) {
			buf = nil
		} else {
			buf = c.awaitClose(buf)
		}
	}
	if c.done {
		buf = nil
	}
	c.carry.Keep(buf)
}

// stopScanning decides, as n more bytes arrive after the server began
// closing c, whether to stop reading c altogether: the socket stays open
// (for the close frame to go out) until CloseTimeout, but nothing more is
// read. A client closed for a policy (a rate limit, a flood, a slow
// reader) stops being read at once; any other once it has sent more than a
// message and a backlog's worth since. Before, the server scanned whatever
// a closed flooder kept sending for the whole CloseTimeout: gigabytes a
// second on loopback. Callers hold readMu.
func (c *conn) stopScanning(n int) bool {
	c.scanned = int32(min(int64(c.scanned)+int64(n), math.MaxInt32))
	c.mu.Lock()
	policy := StatusCode(c.closeCode) == StatusPolicyViolation
	c.mu.Unlock()
	// (Past 2 GiB the count stays put: a larger budget scans until
	// CloseTimeout.)
	if !policy && int64(c.scanned) <= min(int64(c.ep.maxMessage+c.ep.pendingBudget), math.MaxInt32-1) {
		return false
	}
	c.done = true
	c.paused = true
	c.stopReading()
	return true
}

// awaitClose scans input after the server failed the client: frames are
// skipped without being buffered, until the client's close frame answers
// ours and the socket can be dropped at once. It returns the bytes of an
// incomplete header or close frame, to keep for the next read.
func (c *conn) awaitClose(buf []byte) []byte {
	for len(buf) > 0 {
		if c.skip > 0 {
			n := min(c.skip, int64(len(buf)))
			c.skip -= n
			buf = buf[n:]
			continue
		}
		h, hn, err := wsproto.ParseHeader(buf)
		if err != nil {
			c.done = true // not a frame stream any more: wait for CloseTimeout
			return nil
		}
		if hn == 0 {
			return buf
		}
		if h.Op != wsproto.OpClose || h.Len > wsproto.MaxControlPayload {
			c.skip = h.Len
			buf = buf[hn:]
			continue
		}
		if int64(len(buf)-hn) < h.Len {
			return buf
		}
		payload := buf[hn : hn+int(h.Len)]
		wsproto.Mask(payload, h.Key, 0)
		code, reason, _ := wsproto.ParseClosePayload(payload)
		c.done = true
		c.peerClose(StatusCode(code), reason)
		return nil
	}
	return buf
}

// checkHeader applies RFC 6455's rules for frames a server receives, and the
// message size limit, before the payload has arrived.
func (c *conn) checkHeader(h *wsproto.Header) (StatusCode, string) {
	switch {
	case h.RSV&rsv1 != 0 && c.deflate != nil && (h.Op == wsproto.OpText || h.Op == wsproto.OpBinary):
		// permessage-deflate: RSV1 marks a compressed message, on its
		// first frame only.
		if h.RSV != rsv1 {
			return StatusProtocolError, "reserved bits set without an extension"
		}
	case h.RSV != 0:
		return StatusProtocolError, "reserved bits set without an extension"
	case h.Op.IsReserved():
		return StatusProtocolError, "reserved opcode"
	case !h.Masked:
		return StatusProtocolError, "client frame not masked"
	case h.Op.IsControl() && !h.Fin:
		return StatusProtocolError, "fragmented control frame"
	case h.Op.IsControl() && h.Len > wsproto.MaxControlPayload:
		return StatusProtocolError, "control frame longer than 125 bytes"
	}
	if !h.Op.IsControl() {
		size := h.Len
		if c.msg != nil {
			size += int64(len(*c.msg))
		}
		if size > int64(c.ep.maxMessage) {
			return StatusMessageTooBig, "message exceeds the size limit"
		}
	}
	return 0, ""
}

// isText reports whether the frame h carries text: a text frame starting a
// message, or a continuation of a text message. Callers hold readMu.
func (c *conn) isText(h *wsproto.Header) bool {
	// A compressed message is validated once inflated.
	return h.Op == wsproto.OpText && c.msgOp == 0 && h.RSV&rsv1 == 0 ||
		h.Op == wsproto.OpContinuation && c.msgOp == wsproto.OpText && !c.msgZ
}

// validatePartial validates the text that has arrived of an incomplete
// frame (its masked payload so far), so that invalid UTF-8 is refused as
// its bytes come, not once the frame is whole. Callers hold readMu.
func (c *conn) validatePartial(h *wsproto.Header, masked []byte) {
	if !c.isText(h) || len(masked) <= int(c.fed) {
		return
	}
	if h.Op == wsproto.OpText && c.fed == 0 {
		c.text = wsproto.UTF8{} // a new message
	}
	var chunk [512]byte
	for int(c.fed) < len(masked) {
		n := copy(chunk[:], masked[c.fed:])
		wsproto.Mask(chunk[:n], h.Key, int(c.fed))
		c.fed += int32(n)
		if !c.text.Feed(chunk[:n]) {
			c.failMidFrame(StatusInvalidPayload, "text message is not valid UTF-8")
			return
		}
	}
}

// validateText validates a whole text frame's payload (its part that
// validatePartial has not seen) and, at the message's end, that it ends on
// a whole character. Callers hold readMu.
func (c *conn) validateText(h *wsproto.Header, payload []byte) bool {
	fed := c.fed
	c.fed = 0
	if !c.isText(h) {
		return true
	}
	if h.Op == wsproto.OpText && fed == 0 {
		c.text = wsproto.UTF8{}
	}
	if !c.text.Feed(payload[fed:]) || h.Fin && !c.text.Complete() {
		c.fail(StatusInvalidPayload, "text message is not valid UTF-8")
		return false
	}
	return true
}

func (c *conn) handleFrame(h *wsproto.Header, payload []byte) {
	if !c.validateText(h, payload) {
		return
	}
	switch h.Op {
	case wsproto.OpText, wsproto.OpBinary:
		if c.msgOp != 0 {
			c.fail(StatusProtocolError, "new message inside a fragmented message")
			return
		}
		b := bufpool.Get(len(payload))
		*b = append(*b, payload...)
		if h.Fin {
			if h.RSV&rsv1 != 0 {
				c.deliverCompressed(MessageType(h.Op), b)
				return
			}
			c.deliver(MessageType(h.Op), b)
			return
		}
		c.msgOp, c.msg, c.msgZ = h.Op, b, h.RSV&rsv1 != 0
	case wsproto.OpContinuation:
		if c.msgOp == 0 {
			c.fail(StatusProtocolError, "continuation frame without a message")
			return
		}
		c.msg = bufpool.Grow(c.msg, len(payload))
		*c.msg = append(*c.msg, payload...)
		if h.Fin {
			b, op, z := c.msg, c.msgOp, c.msgZ
			c.msg, c.msgOp, c.msgZ = nil, 0, false
			if z {
				c.deliverCompressed(MessageType(op), b)
				return
			}
			c.deliver(MessageType(op), b)
		}
	case wsproto.OpPing:
		c.w.send(job{kind: jobControl, c: c, f: newControlFrame(wsproto.OpPong, payload, 1)})
	case wsproto.OpPong:
		// Activity was recorded by Parse; that is all a pong is for.
	case wsproto.OpClose:
		code, reason, err := wsproto.ParseClosePayload(payload)
		switch {
		case errors.Is(err, wsproto.ErrCloseUTF8):
			c.failClose(StatusInvalidPayload, "close reason is not valid UTF-8")
		case err != nil:
			c.failClose(StatusProtocolError, "invalid close frame")
		default:
			c.done = true // nothing may follow a close frame
			c.dropMessage()
			c.peerClose(StatusCode(code), reason)
		}
	}
}

// deliverCompressed inflates a compressed message (at most the message
// limit's worth: a bomb gets 1009 after that much work), validates its
// text, and delivers it. It takes ownership of b. Callers hold readMu.
func (c *conn) deliverCompressed(typ MessageType, b *[]byte) {
	// The inflated bytes are counted against the client's budget before
	// the work: it inflates no further than the budget goes.
	limit, budgeted := c.ep.maxMessage, false
	rate, now := c.ep.srv.cfg.MaxInflatedBytesPerSecond, time.Now().UnixNano()
	if rate > 0 {
		if left := int(c.inflRate.left(rate, now)); left < limit {
			limit, budgeted = max(left, 0), true
		}
	}
	out, err := inflate(c.deflate, *b, limit)
	bufpool.Put(b)
	switch {
	case errors.Is(err, wsproto.ErrInflateTooBig) && budgeted:
		c.ep.srv.stats.rateLimited.Add(1)
		c.fail(StatusPolicyViolation, ReasonInflateRate)
		return
	case errors.Is(err, wsproto.ErrInflateTooBig):
		c.fail(StatusMessageTooBig, "inflated message exceeds the size limit")
		return
	case err != nil:
		c.fail(StatusInvalidPayload, "compressed message does not inflate")
		return
	}
	c.ep.srv.stats.inflated.Add(1)
	if rate > 0 {
		c.inflRate.take(float64(len(*out)), rate, now)
	}
	if typ == Text {
		var u wsproto.UTF8
		if !u.Feed(*out) || !u.Complete() {
			bufpool.Put(out)
			c.fail(StatusInvalidPayload, "text message is not valid UTF-8")
			return
		}
	}
	c.deliver(typ, out)
}

// dispatched counts the delay from a message's arrival (unix ns) to the
// start of its handling.
func (c *conn) dispatched(arrived int64) {
	d := time.Duration(max(time.Now().UnixNano()-arrived, 0))
	c.ep.srv.stats.dispatch[durationBucket(d)].Add(1)
	c.ep.srv.stats.dispatchNanos.Add(uint64(d))
}

// deliver hands a complete message to the application on the executor,
// or calls it here for an Inline endpoint. It takes ownership of b.
func (c *conn) deliver(typ MessageType, b *[]byte) {
	// Text was validated as it came (validateText).
	c.msgsIn.Add(1)
	srv := c.ep.srv
	// In flight first, then the shutdown check: Shutdown sets draining,
	// then waits for inflight to reach zero, so a message either is seen
	// through or was never accepted.
	srv.inflight.Add(1)
	if srv.draining.Load() {
		srv.doneInflight()
		bufpool.Put(b)
		return // arrived after shutdown began: not accepted
	}
	arrived := c.lastRead.Load() // this read completed the message
	if c.ep.inline && c.flags.Load(flagReady) && c.pendingIn.Load() == 0 {
		// Nothing of this client waits on the executor (its messages
		// before this one are handled, OnOpen has returned): handling it
		// here keeps the order.
		c.dispatched(arrived)
		if !c.flags.Load(flagAppClosed) {
			c.ep.callMessage(c, typ, *b)
		}
		bufpool.Put(b)
		srv.doneInflight()
		return
	}
	size := int64(len(*b))
	c.pendingIn.Add(size)
	srv.pendingIn.Add(size)
	if !c.nbc.Execute(func() {
		defer srv.doneInflight()
		defer bufpool.Put(b)
		c.dispatched(arrived)
		if !c.flags.Load(flagAppClosed) { // the application closed it meanwhile: its backlog is dropped
			c.ep.callMessage(c, typ, *b)
		}
		c.handled(size)
	}) {
		c.pendingIn.Add(-size)
		srv.pendingIn.Add(-size)
		srv.doneInflight()
		bufpool.Put(b)
		return
	}
	// Read the backlog after queueing: the job may be done already. A
	// job that finishes after this check and sees c paused resumes it
	// (handled waits for readMu, which the caller holds).
	if c.overBudget(c.pendingIn.Load(), srv.pendingIn.Load()) {
		c.pause()
	}
}

// overBudget reports whether a client with own bytes of input waiting for
// the application, of total over the server, must stop being read.
func (c *conn) overBudget(own, total int64) bool {
	limit := c.ep.srv.cfg.MaxPendingInputTotal
	return own >= int64(c.ep.pendingBudget) || (limit > 0 && total >= int64(limit) && own > 0)
}

// mayResume reports whether a paused client may be read again: its own
// backlog is down to half its budget, and the server's is under its bound
// (or the client has nothing left waiting).
func (c *conn) mayResume(own, total int64) bool {
	limit := c.ep.srv.cfg.MaxPendingInputTotal
	return own <= int64(c.ep.pendingBudget/2) && (limit <= 0 || total < int64(limit) || own == 0)
}

// pause stops reading c's socket: the kernel keeps what arrives in its
// receive buffer (Config.SocketReadBuffer) and, once that is full, TCP
// stops the sender. Where the poller's registration cannot be changed
// (setReading), the socket's low-water mark is raised instead: epoll then
// reports it readable only once its buffer is nearly full, and Parse keeps
// what comes, within pausedLimit. Callers hold readMu.
func (c *conn) pause() {
	if c.paused {
		return
	}
	c.paused = true
	c.ep.srv.stats.inputPaused.Add(1)
	c.stopReading()
}

func (c *conn) stopReading() {
	if !setReading(c.nbc, false) {
		_ = syscall.SetsockoptInt(c.nbc.Hash(), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, math.MaxInt32)
	}
}

// handled accounts for a message of size bytes the application is done
// with, and resumes reading c if it was paused and has caught up. It runs
// on the executor.
func (c *conn) handled(size int64) {
	own, total := c.pendingIn.Add(-size), c.ep.srv.pendingIn.Add(-size)
	if !c.mayResume(own, total) {
		return
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if !c.paused || c.done || !c.mayResume(c.pendingIn.Load(), c.ep.srv.pendingIn.Load()) {
		return
	}
	// What arrived while paused, first: it may fill the budget again.
	c.paused = false
	c.parse(nil, time.Now().UnixNano())
	if !c.paused {
		c.resume()
	}
}

// resume reads c's socket again (epoll reports it readable at once if it
// holds data). Callers hold readMu.
func (c *conn) resume() {
	c.paused = false
	if !setReading(c.nbc, true) {
		_ = syscall.SetsockoptInt(c.nbc.Hash(), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, 1)
	}
}

func (c *conn) dropMessage() {
	if c.msg != nil {
		bufpool.Put(c.msg)
		c.msg, c.msgOp, c.msgZ = nil, 0, false
	}
}

// fail stops reading and closes the client with code: the peer broke the
// protocol or a limit. Messages it sent before, still waiting for their
// handler, are handled first, and what the handler sends goes out before
// the close frame (Autobahn 3.2, 4.1.3, 5.15: the echo, then the 1002).
// Callers hold readMu.
func (c *conn) fail(code StatusCode, reason string) {
	c.failed = true
	c.dropMessage()
	c.ep.srv.log.Debug("closing client", "id", c.id, "code", int(code), "reason", reason)
	if c.pendingIn.Load() > 0 && c.nbc.Execute(func() { c.startClose(code, reason) }) {
		return // after the client's message jobs: nbio runs a connection's jobs in order
	}
	c.startClose(code, reason)
}

// failClose fails the client for a close frame it sent that is not valid:
// it is the peer's close all the same (it will send nothing more, nor
// answer ours), so the socket is dropped once our close is written, not
// held for CloseTimeout. Callers hold readMu.
func (c *conn) failClose(code StatusCode, reason string) {
	c.done = true
	c.mu.Lock()
	c.peerClosed = true
	c.mu.Unlock()
	c.fail(code, reason)
}

// failMidFrame fails the client in the middle of a frame whose payload has
// not all arrived: the client's answer to our close frame comes where the
// rest of that payload was due (Autobahn 6.4.3-4 sends it there), so it
// cannot be found in what follows. The socket is dropped once our close is
// written, as for failClose, rather than held for CloseTimeout waiting for
// a close frame that cannot be parsed. Callers hold readMu.
func (c *conn) failMidFrame(code StatusCode, reason string) { c.failClose(code, reason) }

// startClose queues a close frame with code and reason, after whatever is
// already queued, and records them as the close status unless one is known.
// It reports false if the client is already closing. Safe from any goroutine.
func (c *conn) startClose(code StatusCode, reason string) bool {
	if !c.flags.CompareAndSwap(flagClosing, false, true) {
		return false
	}
	reason = wsproto.TruncateReason(reason)
	c.mu.Lock()
	if c.closeCode == 0 {
		c.closeCode, c.closeReason = uint16(code), reason
	}
	c.mu.Unlock()
	c.w.post(job{kind: jobClose, c: c, f: newCloseFrame(code, reason, 1)})
	return true
}

// peerClose handles the peer's close frame: echo it if we had not sent ours,
// and drop the socket once our close frame is out.
func (c *conn) peerClose(code StatusCode, reason string) {
	c.mu.Lock()
	c.peerClosed = true
	if c.closeCode == 0 {
		c.closeCode, c.closeReason = uint16(code), reason
	}
	wrote := c.closeWrote
	c.mu.Unlock()
	if wrote {
		c.closeWhenDrained()
		return
	}
	// Echo the peer's code (RFC 6455 section 5.5.1); 1005 echoes an empty
	// close frame. If our close is already queued, the writer drops the
	// socket after writing it, since peerClosed is now set.
	c.startClose(code, "")
}

// closeWritten is called by the writer once our close frame went to the
// socket.
func (c *conn) closeWritten() {
	c.mu.Lock()
	c.closeWrote = true
	peer := c.peerClosed
	if !peer && c.closeTimer == nil && !c.flags.Load(flagGone) {
		c.closeTimer = time.AfterFunc(c.ep.srv.cfg.CloseTimeout, c.drop)
	}
	c.mu.Unlock()
	if peer {
		c.closeWhenDrained()
	}
}

// closeWhenDrained drops the socket once the kernel has taken every queued
// byte (nbio discards queued bytes on close), or after CloseTimeout.
func (c *conn) closeWhenDrained() {
	c.flags.Store(flagCloseOnDrain, true)
	if c.queued() <= 0 {
		c.drop()
		return
	}
	c.mu.Lock()
	if c.closeTimer == nil && !c.flags.Load(flagGone) {
		c.closeTimer = time.AfterFunc(c.ep.srv.cfg.CloseTimeout, c.drop)
	}
	c.mu.Unlock()
}

// drop closes the socket now.
func (c *conn) drop() { _ = c.nbc.Close() }

// onWritten is nbio's OnWrittenSize for this client: it runs with the nbio
// connection locked, so it only counts, and hands a close off.
//
// With TLS both counts are ciphertext (the writer adds each record's
// overhead to sent); a record the TLS layer writes by itself (an alert, a
// key update) is counted in written only, so drained means written >= sent.
func (c *conn) onWritten(n int) {
	if c.written.Add(int64(n)) >= c.sent.Load() && c.flags.Load(flagCloseOnDrain) {
		c.flags.Store(flagCloseOnDrain, false)
		go c.drop()
	}
}

// CloseAndClean implements nbhttp.ParserCloser: nbhttp calls it on the
// executor once the socket is closed, after every message job of this
// client.
func (c *conn) CloseAndClean(err error) {
	if !c.flags.CompareAndSwap(flagGone, false, true) {
		return
	}
	c.flags.Store(flagClosing, true)
	c.readMu.Lock()
	c.done = true
	c.carry.Release()
	c.dropMessage()
	c.readMu.Unlock()
	c.mu.Lock()
	if c.closeTimer != nil {
		c.closeTimer.Stop()
	}
	code, reason := StatusCode(c.closeCode), c.closeReason
	c.mu.Unlock()
	if code == 0 {
		code, reason = StatusAbnormalClosure, "connection dropped without a close frame"
	}
	c.ep.srv.stats.closed[closeClass(code)].Add(1)
	c.ep.remove(c) // folds what c read into the registry's totals
	c.ep.srv.limits.release(c.remote())
	c.w.post(job{kind: jobGone, c: c})
	if c.flags.Load(flagOpened) {
		c.ep.callClose(c, code, reason)
	}
}

// info returns the client's counters.
func (c *conn) info() ClientInfo {
	return ClientInfo{
		ID:          c.id,
		RemoteAddr:  c.remote(),
		BytesIn:     c.bytesIn.Load(),
		BytesOut:    c.bytesOut.Load(),
		FramesIn:    c.framesIn.Load(),
		FramesOut:   c.framesOut.Load(),
		MessagesIn:  c.msgsIn.Load(),
		MessagesOut: c.msgsOut.Load(),
		QueuedBytes: max(c.queued(), 0),
		ConnectedAt: time.Unix(0, c.connectedAt),
		LastReadAt:  unixNano(c.lastRead.Load()),
		LastWriteAt: unixNano(c.lastWrite.Load()),
	}
}

func unixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
