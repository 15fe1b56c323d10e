package engine

import (
	"sync/atomic"
	"time"
)

// flushBuckets is the number of power-of-two buckets of round durations,
// from 1 us to about 0.5 s and more.
const flushBuckets = 20

// latencyBuckets is the number of power-of-two buckets of latencies, from
// 1 us to about 0.5 s and more (as flushBuckets).
const latencyBuckets = flushBuckets

// closeClasses names the close-code classes counted in Stats.ClosedByCode.
var closeClasses = [...]string{
	"normal", "going_away", "protocol_error", "invalid_data", "policy", "too_big", "internal_error", "abnormal", "other",
}

// closeClass maps a close code to its index in closeClasses.
func closeClass(code StatusCode) int {
	switch code {
	case StatusNormalClosure, StatusNoStatusRcvd:
		return 0
	case StatusGoingAway:
		return 1
	case StatusProtocolError, StatusUnsupportedData:
		return 2
	case StatusInvalidPayload:
		return 3
	case StatusPolicyViolation:
		return 4
	case StatusMessageTooBig:
		return 5
	case StatusInternalError:
		return 6
	case StatusAbnormalClosure:
		return 7
	}
	return 8
}

// CloseClasses returns the names of the close-code classes of
// Stats.ClosedByCode, in order: normal (1000, 1005), going_away (1001),
// protocol_error (1002, 1003), invalid_data (1007), policy (1008), too_big
// (1009), internal_error (1011), abnormal (1006: dropped without a close
// frame), other.
func CloseClasses() []string { return closeClasses[:] }

// batchBuckets is the number of power-of-two batch-size buckets: 1, 2, 3-4,
// 5-8, ... up to 2^(batchBuckets-2)+1 frames and more.
const batchBuckets = 12

// writerStats are one writer's counters. Each writer updates its own, once
// per round where it can, so the hot path pays a few atomic adds per write
// and none per delivery.
type writerStats struct {
	rounds            atomic.Uint64
	callerRounds      atomic.Uint64
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
	writeDelay        [latencyBuckets]atomic.Uint64
	writeDelayNanos   atomic.Uint64
	_                 [64]byte // keep writers' counters on separate cache lines
}

// serverStats are the server-wide counters.
type serverStats struct {
	accepted      atomic.Uint64
	framesEncoded atomic.Uint64
	refusedOrigin atomic.Uint64
	refusedLimit  atomic.Uint64
	refusedBad    atomic.Uint64
	refusedAddr   atomic.Uint64
	refusedNet    atomic.Uint64
	evicted       atomic.Uint64
	rateLimited   atomic.Uint64
	inputPaused   atomic.Uint64
	refusedApp    atomic.Uint64
	appPanics     atomic.Uint64
	compressed    atomic.Uint64 // frames compressed (once each, whatever the recipients)
	compressedIn  atomic.Uint64 // their payload bytes
	compressedOut atomic.Uint64 // compressed
	inflated      atomic.Uint64 // compressed messages received
	deflateConns  atomic.Uint64 // clients that negotiated permessage-deflate
	dispatch      [latencyBuckets]atomic.Uint64
	dispatchNanos atomic.Uint64
	closed        [len(closeClasses)]atomic.Uint64
	writers       []writerStats
}

// readTotals are what clients read: summed over live clients at Stats time
// (reading costs no shared atomic), and folded into their registry shard,
// under its lock, when they leave, so totals never go down between scrapes.
type readTotals struct {
	bytes, frames, messages uint64
}

// Stats is a snapshot of a Server's counters since it started. Counters
// only grow; gauges (Clients, QueuedBytes) are current values.
type Stats struct {
	Clients          int    // open WebSocket clients
	Accepted         uint64 // WebSocket upgrades completed
	RefusedOrigin    uint64 // handshakes refused for their Origin (403)
	RefusedLimit     uint64 // handshakes refused by MaxConnections or shutdown (503)
	RefusedMalformed uint64 // malformed upgrade requests (400, 405, 426)
	RefusedAddr      uint64 // upgrades refused by the per-address limits (429)
	RefusedNetwork   uint64 // upgrades refused by the per-network limit (429)
	EvictedSilent    uint64 // guests that never sent a message, closed (1013) to make room for a new client
	RateLimited      uint64 // clients closed for sending too fast (1008)
	InputPaused      uint64 // times a client's socket stopped being read (MaxPendingInput, MaxPendingInputTotal)
	PendingInput     int64  // bytes of received messages the application has not handled yet
	RefusedByApp     uint64 // handshakes refused by Application.OnHandshake
	AppPanics        uint64 // panics recovered in application callbacks
	// Compression (permessage-deflate): clients that negotiated it,
	// frames compressed (once each, however many recipients), their
	// payload bytes before and after, and compressed messages received.
	DeflateClients, Compressed, CompressedIn, CompressedOut, Inflated uint64
	BytesRead                                                         uint64 // bytes read from clients since start, frame headers included
	FramesRead                                                        uint64
	MessagesRead                                                      uint64 // data messages received (whole, after reassembly)
	FramesEncoded                                                     uint64 // frames built by the send API: one per send, not per recipient
	Writes                                                            uint64 // Write calls on client sockets
	FramesWritten                                                     uint64 // frames in those writes, control frames included
	Deliveries                                                        uint64 // data messages written to clients: one per message per recipient
	BytesWritten                                                      uint64
	Rounds                                                            uint64  // writer rounds that wrote anything
	SenderRounds                                                      uint64  // rounds run by the sender itself: a lone reply to an idle writer
	FlushSeconds                                                      float64 // time spent in those rounds
	SkippedSlow                                                       uint64  // deliveries skipped: the recipient was over SendQueueSoftLimit
	ClosedSlow                                                        uint64  // clients closed as slow consumers
	HeartbeatTimeouts                                                 uint64  // clients closed for not answering a ping
	PingsSent                                                         uint64
	QueuedBytes                                                       int64 // bytes handed to sockets that the kernel has not taken
	// BatchSizeBuckets counts writes by frames per write; bucket i holds
	// batches of at most BatchBucketUpperBound(i) frames.
	BatchSizeBuckets [batchBuckets]uint64
	// FlushBuckets counts writer rounds by duration; bucket i holds rounds
	// of at most FlushBucketUpperBound(i).
	FlushBuckets [flushBuckets]uint64
	// WriteDelayBuckets counts writes by the age of their oldest message:
	// from the send call to the write (bucket bounds: FlushBucketUpperBound).
	WriteDelayBuckets [latencyBuckets]uint64
	WriteDelaySeconds float64 // the sum of those ages
	// DispatchBuckets counts received messages by the time from their last
	// frame's arrival to the start of OnMessage: the executor's queueing.
	DispatchBuckets [latencyBuckets]uint64
	DispatchSeconds float64 // the sum of those delays
	// ClosedByCode counts clients gone, by the class of their close code
	// (see CloseClasses).
	ClosedByCode [len(closeClasses)]uint64
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
