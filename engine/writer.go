package engine

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/internal/wsproto"
)

type jobKind uint8

const (
	jobOpen        jobKind = iota + 1 // write c's 101 response (f); c joins its endpoint's member list
	jobGone                           // c's socket closed: leave the member list
	jobSend                           // f to c
	jobMulticast                      // f to this shard's clients among f.conns
	jobBroadcast                      // f to every member of ep, except ids
	jobControl                        // control frame f to c, past the soft limit
	jobClose                          // close frame f to c; nothing may follow
	jobCloseAll                       // close frame f to every member of ep
	jobTick                           // heartbeats, slow consumers, read deadlines
	jobFunc                           // call fn after this round's writes (a barrier)
	jobGroupAdd                       // c joins group g
	jobGroupRemove                    // c leaves group g
	jobGroupSend                      // f to this writer's members of g, except ids
)

// job is one unit of work for a writer shard. Jobs are values in a reused
// slice, so posting one allocates nothing in steady state.
type job struct {
	kind   jobKind
	c      *conn
	ep     *Endpoint
	g      *Group
	f      *frame
	except []ClientID
	now    int64
	fn     func()
}

// entry links a frame into a client's pending list in the writer's arena.
type entry struct {
	f    *frame
	next int32
}

// maxScratch is the largest coalescing buffer a writer keeps between rounds.
const maxScratch = 4 << 20

// writer is one shard of the write path. It owns a fixed subset of the
// clients (by id): only its goroutine writes their data, so frames of one
// client never interleave and its queue accounting is exact.
//
// A round takes every job posted so far, appends each frame to the pending
// list of each recipient (a pointer in an arena: no copy), then writes each
// recipient's pending frames with one Write. It loops while jobs keep
// arriving: an idle server writes at once, a busy one batches by itself.
type writer struct {
	idx int
	srv *Server

	mu   sync.Mutex
	jobs []job
	wake chan struct{} // capacity 1: a pending wake-up

	// roundMu is held through a round: by the writer's goroutine, or by a
	// sender running its lone job itself (send).
	roundMu sync.Mutex

	// Owned by whoever holds roundMu.
	work   []job
	arena  []entry
	dirty  []*conn
	closed []*conn  // clients whose close frame this round wrote
	extra  []*frame // frames the writer made itself this round (pings)
	after  []func() // barriers, called once the round is written
	last   []*frame // the frames now in scratch, in order
	now    int64    // unix ns at the start of the current round
	wrote  bool     // the last round wrote to a client
	busy   bool     // the last round wrote more than one socket write

	// The most each round buffer held since trimmedAt (trim).
	peakArena, peakDirty, peakWork int
	trimmedAt                      int64

	// Histogram counts of the current round, published to stats once per
	// round: a plain add per write instead of an atomic one.
	batchCounts      [batchBuckets]uint64
	writeDelayCounts [latencyBuckets]uint64
	scratch          []byte
	stats            *writerStats
}

func newWriter(srv *Server, idx int) *writer {
	return &writer{
		idx:   idx,
		srv:   srv,
		wake:  make(chan struct{}, 1),
		stats: &srv.stats.writers[idx],
	}
}

// post queues j for the writer. Safe from any goroutine; never blocks.
func (w *writer) post(j job) {
	w.mu.Lock()
	w.jobs = append(w.jobs, j)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run is the writer's goroutine. It returns when stop is closed and every
// job posted before is done.
//
// With Config.FlushWindow set, a round follows a busy round (one that made
// more than one write) by at least a window: work posted within a window
// of it waits for the window's end, so it joins one batch; work posted
// later goes out at once. A round that wrote once (a reply to one client,
// a request/response exchange) starts no window: the next exchange goes
// out at once, where a fixed window taxed each by about 1.3 ms.
func (w *writer) run(stop <-chan struct{}) {
	window := w.srv.cfg.FlushWindow
	var timer *time.Timer
	var lastWrite time.Time // start of the last round that wrote
	for {
		select {
		case <-w.wake:
		case <-stop:
			for {
				if worked, _ := w.round(); !worked {
					return
				}
			}
		}
		for {
			if window > 0 {
				if wait := time.Until(lastWrite.Add(window)); wait > 0 {
					if timer == nil {
						timer = time.NewTimer(wait)
					} else {
						timer.Reset(wait)
					}
					select {
					case <-timer.C:
					case <-stop:
					}
				}
			}
			start := time.Now()
			worked, busy := w.round()
			if busy {
				// Only a round that wrote more than once starts a window:
				// housekeeping (ticks, joins) and lone replies must not
				// delay the next message.
				lastWrite = start
			}
			if !worked || (window > 0 && !w.pending()) {
				break // idle: wait for a wake, not for the window
			}
		}
	}
}

// variant returns the frame c gets for f: its compressed twin when c
// negotiated permessage-deflate (made once, shared by every such client).
func (w *writer) variant(c *conn, f *frame) *frame {
	if c.deflate == nil {
		return f
	}
	return f.compressed(w.srv, c.deflate)
}

// pending reports whether jobs wait for the next round.
func (w *writer) pending() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.jobs) > 0
}

// round runs one group commit and reports whether there was anything to
// do, and whether it was busy (wrote more than once).
func (w *writer) round() (worked, busy bool) {
	w.roundMu.Lock()
	defer w.roundMu.Unlock()
	w.mu.Lock()
	w.work, w.jobs = w.jobs, w.work[:0]
	w.mu.Unlock()
	if len(w.work) == 0 {
		return false, false
	}
	w.peakWork = max(w.peakWork, len(w.work))
	w.commit(w.work)
	return true, w.busy
}

// commit applies work, writes what it queued and releases it. Callers hold
// roundMu.
func (w *writer) commit(work []job) {
	start := time.Now()
	w.now = start.UnixNano()
	for i := range work {
		w.apply(&work[i])
	}
	w.flush(start)
	for i := range work {
		if f := work[i].f; f != nil {
			f.release()
		}
		work[i] = job{}
	}
	for i, f := range w.extra {
		f.release()
		w.extra[i] = nil
	}
	w.extra = w.extra[:0]
	for i, fn := range w.after {
		fn()
		w.after[i] = nil
	}
	w.after = w.after[:0]
	w.trim()
}

// send runs j, a frame for one client, as a round of its own on the
// caller's goroutine when the writer is idle: no round running, no job
// waiting, no flush window open (the last round was not busy). A reply
// then costs its sender one write, where waking the writer's goroutine
// added a handoff (about 5 us) to every request/response exchange.
// Otherwise j is posted: it joins the next round, in order.
func (w *writer) send(j job) {
	if !w.roundMu.TryLock() {
		w.post(j)
		return
	}
	w.mu.Lock()
	idle := len(w.jobs) == 0 && !w.busy
	w.mu.Unlock()
	if !idle {
		w.roundMu.Unlock()
		w.post(j)
		return
	}
	// Jobs posted from now on wait for the writer's next round, which
	// needs roundMu: they go out after j, as they were posted after it.
	one := [1]job{j}
	w.commit(one[:])
	if w.wrote {
		w.stats.callerRounds.Add(1)
	}
	w.roundMu.Unlock()
}

func (w *writer) apply(j *job) {
	switch j.kind {
	case jobOpen:
		// The 101 goes out from here, ahead of everything posted after
		// the open: a client that has its 101 misses no later broadcast.
		if j.f != nil {
			w.push(j.c, j.f)
		}
		j.c.memberIdx = int32(len(j.c.ep.members[w.idx]))
		j.c.ep.members[w.idx] = append(j.c.ep.members[w.idx], j.c)
	case jobGone:
		w.leave(j.c)
	case jobSend:
		w.enqueue(j.c, j.f, false)
	case jobMulticast:
		for _, c := range j.f.conns {
			// A client listed twice has this frame at its tail already.
			if c.w == w && (c.tail < 0 || w.arena[c.tail].f != j.f) {
				w.enqueue(c, j.f, true)
			}
		}
	case jobBroadcast:
		for _, c := range j.ep.members[w.idx] {
			if !excluded(j.except, c.id) {
				w.enqueue(c, j.f, true)
			}
		}
	case jobControl:
		if !j.c.flags.Load(flagGone) && !j.c.closeEnqueued {
			w.push(j.c, j.f)
		}
	case jobClose:
		w.enqueueClose(j.c, j.f)
	case jobCloseAll:
		for _, c := range j.ep.members[w.idx] {
			if c.flags.CompareAndSwap(flagClosing, false, true) {
				c.mu.Lock()
				if c.closeCode == 0 {
					c.closeCode, c.closeReason = uint16(StatusGoingAway), shutdownReason
				}
				c.mu.Unlock()
				w.enqueueClose(c, j.f)
			}
		}
	case jobTick:
		w.tick(j.now)
	case jobFunc:
		w.after = append(w.after, j.fn)
	case jobGroupAdd:
		w.groupAdd(j.g, j.c)
	case jobGroupRemove:
		w.groupRemove(j.g, j.c)
	case jobGroupSend:
		for _, c := range j.g.members[w.idx] {
			if !excluded(j.except, c.id) {
				w.enqueue(c, j.f, true)
			}
		}
	}
}

func excluded(ids []ClientID, id ClientID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// leave removes c from its endpoint's member list and from every group.
func (w *writer) leave(c *conn) {
	for len(c.groups) > 0 {
		w.dropFromGroup(c, len(c.groups)-1)
	}
	if c.memberIdx < 0 {
		return
	}
	m := c.ep.members[w.idx]
	last := len(m) - 1
	if i := int(c.memberIdx); i != last {
		m[i] = m[last]
		m[i].memberIdx = int32(i)
	}
	m[last] = nil
	c.ep.members[w.idx] = m[:last]
	c.memberIdx = -1
}

// trim gives back, at most once a tick interval, the room of the writer's
// round buffers (pending-frame arena, dirty list, job list) beyond twice
// what the rounds since the last trim needed: a burst of 200 broadcasts to
// 10,000 clients grew them to 17 MB per writer, kept for good.
func (w *writer) trim() {
	if w.now-w.trimmedAt < int64(w.srv.tickEvery) {
		return
	}
	w.trimmedAt = w.now
	w.arena = shrink(w.arena, w.peakArena)
	w.dirty = shrink(w.dirty, w.peakDirty)
	w.work = shrink(w.work[:0], w.peakWork)
	w.peakArena, w.peakDirty, w.peakWork = 0, 0, 0
}

// minKeep is the capacity below which a round buffer is never shrunk.
const minKeep = 256

// shrink returns the empty s with room for about peak elements, or s
// itself if its room is not much more than that.
func shrink[T any](s []T, peak int) []T {
	if cap(s) <= minKeep || cap(s) <= 4*peak {
		return s
	}
	return make([]T, 0, max(minKeep, 2*peak))
}

// enqueue adds data frame f to c's pending list, unless c's close frame is
// already queued (by this writer: data posted before a close still goes
// out) or c is over its queue bounds. A frame to many (skippable) is
// skipped past the soft limit; a frame to c alone (a reply, a replay) is
// never skipped: past the hard limit c is closed instead.
func (w *writer) enqueue(c *conn, f *frame, skippable bool) {
	if c.closeEnqueued || c.flags.Load(flagGone) {
		return
	}
	q := c.queued() + int64(c.pendingBytes)
	cfg := &w.srv.cfg
	// One message bigger than the hard limit still goes to a client with
	// nothing queued (an echo of a 16 MiB message): the limits bound what
	// piles up, not what a single message may be.
	if q > 0 && q+int64(len(f.buf)) > int64(cfg.SendQueueHardLimit) {
		if c.startClose(StatusPolicyViolation, ReasonSlowConsumer) {
			w.stats.slowClosed.Add(1)
		}
		return
	}
	if skippable && q > int64(cfg.SendQueueSoftLimit) {
		w.stats.skipped.Add(1)
		if c.backlogSince == 0 {
			c.backlogSince = w.now // the client is behind: the slow-consumer clock starts
		}
		return
	}
	w.push(c, f)
}

// enqueueClose adds close frame f to c's pending list; nothing follows it.
func (w *writer) enqueueClose(c *conn, f *frame) {
	if c.flags.Load(flagGone) || c.closeEnqueued {
		return
	}
	c.closeEnqueued = true
	w.push(c, f)
	w.closed = append(w.closed, c)
}

func (w *writer) push(c *conn, f *frame) {
	idx := int32(len(w.arena))
	w.arena = append(w.arena, entry{f: f, next: -1})
	if c.tail < 0 {
		c.head = idx
		w.dirty = append(w.dirty, c)
	} else {
		w.arena[c.tail].next = idx
	}
	c.tail = idx
	c.pendingBytes += len(f.buf)
}

// flush writes each dirty client's pending frames with one Write.
//
// A client with one pending frame is written the frame's own bytes. Several
// frames are concatenated into the writer's scratch buffer (never Writev:
// nbio loses data on partial multi-buffer writes). Recipients of the same
// messages have the same pending list, so the concatenation is reused from
// one recipient to the next as long as the list matches: a burst to a room
// is copied once, not once per member.
func (w *writer) flush(start time.Time) {
	var writes, frames, deliveries, bytes, delaySum uint64
	now := time.Now().UnixNano()
	defer func() { w.wrote, w.busy = writes > 0, writes > 1 }()
	w.last = w.last[:0]
	for _, c := range w.dirty {
		var nf, nd, raw uint64
		first := w.arena[c.head]
		f0 := w.variant(c, first.f)
		buf := f0.buf
		born := first.f.born // frames are in send order: the first is the oldest
		if first.next < 0 {
			nf, nd, raw = f0.counts()
		} else {
			same := true
			k := 0
			for i := c.head; i >= 0; i = w.arena[i].next {
				f := w.variant(c, w.arena[i].f)
				if same && (k >= len(w.last) || w.last[k] != f) {
					same = false
				}
				k++
				a, b, r := f.counts()
				nf, nd, raw = nf+a, nd+b, raw+r
			}
			if !same || k != len(w.last) {
				w.scratch = w.scratch[:0]
				w.last = w.last[:0]
				for i := c.head; i >= 0; i = w.arena[i].next {
					f := w.variant(c, w.arena[i].f)
					w.scratch = append(w.scratch, f.buf...)
					w.last = append(w.last, f)
				}
			}
			buf = w.scratch
		}
		n := len(buf)
		c.head, c.tail, c.pendingBytes = -1, -1, 0
		if c.tlsOverhead > 0 {
			c.sent.Add(int64(tlsWireSize(n, int(c.tlsOverhead))))
		} else {
			c.sent.Add(int64(n))
		}
		if _, err := c.out.Write(buf); err != nil {
			continue // closed: CloseAndClean reports it
		}
		c.framesOut.Add(nf)
		c.msgsOut.Add(nd)
		c.bytesOut.Add(uint64(n) - raw)
		c.lastWrite.Store(now)
		writes++
		frames += nf
		deliveries += nd
		bytes += uint64(n)
		w.batchCounts[batchBucket(nf)]++
		if born != 0 {
			d := time.Duration(max(now-born, 0))
			w.writeDelayCounts[durationBucket(d)]++
			delaySum += uint64(d)
		}
	}
	w.peakArena, w.peakDirty = max(w.peakArena, len(w.arena)), max(w.peakDirty, len(w.dirty))
	clear(w.dirty)
	w.dirty = w.dirty[:0]
	clear(w.arena)
	w.arena = w.arena[:0]
	clear(w.last)
	w.last = w.last[:0]
	if cap(w.scratch) > maxScratch {
		w.scratch = nil
	}
	for _, c := range w.closed {
		c.closeWritten()
	}
	clear(w.closed)
	w.closed = w.closed[:0]
	if writes > 0 {
		d := time.Since(start)
		w.stats.rounds.Add(1)
		w.stats.writes.Add(writes)
		w.stats.frames.Add(frames)
		w.stats.deliveries.Add(deliveries)
		w.stats.bytes.Add(bytes)
		w.stats.flushNanos.Add(uint64(d))
		w.stats.flush[durationBucket(d)].Add(1)
		w.stats.writeDelayNanos.Add(delaySum)
		publish(w.stats.batch[:], w.batchCounts[:])
		publish(w.stats.writeDelay[:], w.writeDelayCounts[:])
	}
}

// publish adds a round's histogram counts to the shared ones and clears
// them.
func publish(shared []atomic.Uint64, round []uint64) {
	for i, n := range round {
		if n != 0 {
			shared[i].Add(n)
			round[i] = 0
		}
	}
}

// batchBucket maps a batch size (frames per write) to a power-of-two bucket.
func batchBucket(n uint64) int {
	b := bits.Len64(n - 1)
	if b >= batchBuckets {
		b = batchBuckets - 1
	}
	return b
}

// durationBucket maps a round's duration to a power-of-two bucket of
// microseconds: <=1us, <=2us, <=4us, ...
func durationBucket(d time.Duration) int {
	us := uint64(d / time.Microsecond)
	if us == 0 {
		return 0
	}
	b := bits.Len64(us - 1)
	if b >= flushBuckets {
		b = flushBuckets - 1
	}
	return b
}

// tick runs the per-second checks over this shard's clients.
func (w *writer) tick(now int64) {
	cfg := &w.srv.cfg
	var ping *frame
	for _, ep := range w.srv.endpoints {
		for _, c := range ep.members[w.idx] {
			if !c.deadlineCleared {
				// nbhttp arms an HTTP keep-alive read deadline when it adds
				// the socket, which can land after the upgrade cleared it
				// (research/nbio.md): clear it again once, here.
				_ = c.nbc.SetReadDeadline(time.Time{})
				c.deadlineCleared = true
			}
			if c.closeEnqueued {
				continue
			}
			// A client is behind from its first skipped message until its
			// queue drains; behind for SlowConsumerTimeout, it is closed.
			switch q := c.queued(); {
			case q <= 0:
				c.backlogSince = 0
			case c.backlogSince == 0 && q > int64(cfg.SendQueueSoftLimit):
				c.backlogSince = now
			case c.backlogSince != 0 && now-c.backlogSince >= int64(cfg.SlowConsumerTimeout):
				if c.startClose(StatusPolicyViolation, ReasonSlowConsumer) {
					w.stats.slowClosed.Add(1)
				}
				continue
			}
			if cfg.HeartbeatInterval <= 0 {
				continue
			}
			last := c.lastRead.Load()
			if last == 0 {
				last = c.connectedAt
			}
			switch {
			case c.pingSentAt != 0 && last > c.pingSentAt:
				c.pingSentAt = 0 // answered
			case c.pingSentAt != 0 && now-c.pingSentAt >= int64(cfg.HeartbeatTimeout):
				if c.startClose(StatusPolicyViolation, ReasonHeartbeat) {
					w.stats.heartbeatTimeouts.Add(1)
				}
			case c.pingSentAt == 0 && now-last >= int64(cfg.HeartbeatInterval):
				if ping == nil {
					ping = newControlFrame(wsproto.OpPing, nil, 1)
					w.extra = append(w.extra, ping)
				}
				w.push(c, ping)
				c.pingSentAt = now
				w.stats.pings.Add(1)
			}
		}
	}
}
