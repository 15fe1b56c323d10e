package engine

import (
	"sync/atomic"
	"time"
)

// flushBuckets is the number of power-of-two buckets of round durations,
// from 1 us to about 0.5 s and more.
const flushBuckets = 20

// batchBuckets is the number of power-of-two batch-size buckets: 1, 2, 3-4,
// 5-8, ... up to 2^(batchBuckets-2)+1 frames and more.
const batchBuckets = 12

// writerStats are one writer's counters. Each writer updates its own, once
// per round where it can, so the hot path pays a few atomic adds per write
// and none per delivery.
type writerStats struct {
	rounds            atomic.Uint64
	writes            atomic.Uint64
	frames            atomic.Uint64
	deliveries        atomic.Uint64
	bytes             atomic.Uint64
	flushNanos        atomic.Uint64
	skipped           atomic.Uint64
	slowClosed        atomic.Uint64
	heartbeatTimeouts atomic.Uint64
	pings             atomic.Uint64
	batch             [batchBuckets]atomic.Uint64
	flush             [flushBuckets]atomic.Uint64
	_                 [64]byte // keep writers' counters on separate cache lines
}

// serverStats are the server-wide counters.
type serverStats struct {
	accepted      atomic.Uint64
	framesEncoded atomic.Uint64
	refusedOrigin atomic.Uint64
	refusedLimit  atomic.Uint64
	refusedBad    atomic.Uint64
	refusedApp    atomic.Uint64
	appPanics     atomic.Uint64
	writers       []writerStats
}

// Stats is a snapshot of a Server's counters since it started. Counters
// only grow; gauges (Clients, QueuedBytes) are current values.
type Stats struct {
	Clients           int    // open WebSocket clients
	Accepted          uint64 // WebSocket upgrades completed
	RefusedOrigin     uint64 // handshakes refused for their Origin (403)
	RefusedLimit      uint64 // handshakes refused by MaxConnections or shutdown (503)
	RefusedMalformed  uint64 // malformed upgrade requests (400, 405, 426)
	RefusedByApp      uint64 // handshakes refused by Application.OnHandshake
	AppPanics         uint64 // panics recovered in application callbacks
	FramesEncoded     uint64 // frames built by the send API: one per send, not per recipient
	Writes            uint64 // Write calls on client sockets
	FramesWritten     uint64 // frames in those writes, control frames included
	Deliveries        uint64 // data messages written to clients: one per message per recipient
	BytesWritten      uint64
	Rounds            uint64  // writer rounds that wrote anything
	FlushSeconds      float64 // time spent in those rounds
	SkippedSlow       uint64  // deliveries skipped: the recipient was over SendQueueSoftLimit
	ClosedSlow        uint64  // clients closed as slow consumers
	HeartbeatTimeouts uint64  // clients closed for not answering a ping
	PingsSent         uint64
	QueuedBytes       int64 // bytes handed to sockets that the kernel has not taken
	// BatchSizeBuckets counts writes by frames per write; bucket i holds
	// batches of at most BatchBucketUpperBound(i) frames.
	BatchSizeBuckets [batchBuckets]uint64
	// FlushBuckets counts writer rounds by duration; bucket i holds rounds
	// of at most FlushBucketUpperBound(i).
	FlushBuckets [flushBuckets]uint64
}

// FlushBucketUpperBound returns the longest round counted in bucket i of
// Stats.FlushBuckets; the last bucket has no upper bound and reports -1.
func FlushBucketUpperBound(i int) time.Duration {
	if i >= flushBuckets-1 {
		return -1
	}
	return time.Microsecond << i
}

// BatchBucketUpperBound returns the largest batch size (frames per write)
// counted in bucket i of Stats.BatchSizeBuckets; the last bucket has no
// upper bound and reports -1.
func BatchBucketUpperBound(i int) int {
	if i >= batchBuckets-1 {
		return -1
	}
	return 1 << i
}
