package natsbroker

import (
	"slices"
	"sync/atomic"
	"time"
)

// stats are the broker's counters.
type stats struct {
	published, publishErrors, received, repaired, lost, duplicates atomic.Uint64
	presenceReceived, directReceived, resets, nodesGone, slow      atomic.Uint64
	reconnects, disconnects, controlReceived, recreated            atomic.Uint64
	droppedBeats, droppedRules, streamsDeleted, stalls, beats      atomic.Uint64
	retries, publishTimeouts, bufferFull, overtook, fetchRetries   atomic.Uint64
	lateAcks, tailRepairs, droppedReads                            atomic.Uint64
	provisionRetries                                               atomic.Uint64
	lag                                                            histogram
}

// Stats is a snapshot of a Broker's counters.
type Stats struct {
	Connected        bool   // connected to NATS now
	Published        uint64 // room messages accepted for NATS
	PublishErrors    uint64 // room messages given up (not stored within PublishTimeout, refused, outbox full): their senders were told
	PublishRetries   uint64 // room messages sent again (an outage, a timeout, a leader change): stored once all the same
	PublishTimeouts  uint64 // sends unacknowledged within 2 s (the room's queue was then sent again)
	BufferFull       uint64 // room messages refused because MaxBuffered bytes waited for NATS
	Overtaken        uint64 // room messages stored before one accepted earlier in their room (should stay 0)
	ProvisionRetries uint64 // requests making or opening a stream or bucket that went unanswered and were made again
	LateAcks         uint64 // acknowledgements that came after their send timed out, taken all the same
	TailRepairs      uint64 // repairs started by another node's heartbeat naming a room message this node had not received
	DroppedReads     uint64 // read positions in the bucket that did not decode strictly (taken as none)
	FetchRetries     uint64 // repairs that could not read their stream (NATS away, no leader) and tried again
	BufferedBytes    int    // bytes of room messages waiting for NATS now (sent and unacknowledged, or held through an outage)
	BufferedMsgs     int    // room messages waiting for NATS now
	Received         uint64 // room messages handed to the hub (repaired ones included)
	Repaired         uint64 // room messages fetched from their stream after a miss
	Lost             uint64 // missed room messages the stream no longer had
	Duplicates       uint64 // room messages received twice (dropped)
	PresenceReceived uint64 // presence news from other nodes
	DirectReceived   uint64 // direct messages from other nodes
	Resets           uint64 // rooms whose stream NATS lost (started again)
	NodesGone        uint64 // nodes that left or went silent
	SlowConsumer     uint64 // times NATS dropped messages for this node
	Reconnects       uint64 // reconnections to NATS
	Disconnects      uint64 // losses of the NATS connection
	ControlReceived  uint64 // broadcasts received (DMs to users, disconnections)
	Recreated        uint64 // room streams made again after they were deleted under this node
	DroppedBeats     uint64 // heartbeats that did not decode strictly (dropped)
	DroppedRules     uint64 // rule records that did not decode strictly (dropped)
	StreamsDeleted   uint64 // streams of rooms no node had open for RoomTTL, deleted by this node
	Stalls           uint64 // heartbeat ticks that came late (this node stalled): nobody was judged silent on them
	Beats            uint64 // heartbeats heard from other nodes
	Nodes            int    // other live nodes
	// Lag is the time from a room message's storing in its stream to its
	// arrival here: counts per LagBuckets() bound, the last one above them
	// all, and their sum.
	LagCounts []uint64
	LagSum    time.Duration
}

// lagBuckets are the upper bounds of Stats.LagCounts.
var lagBuckets = [...]time.Duration{250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond,
	2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond,
	50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second}

// LagBuckets returns the upper bounds of Stats.LagCounts.
func LagBuckets() []time.Duration { return slices.Clone(lagBuckets[:]) }

// histogram counts durations per lagBuckets bound (the last slot: above).
type histogram struct {
	counts [len(lagBuckets) + 1]atomic.Uint64
	sum    atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for i < len(lagBuckets) && d > lagBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// Stats returns a snapshot of the broker's counters.
func (b *Broker) Stats() Stats {
	s := &b.stats
	st := Stats{Connected: b.nc.IsConnected(), Published: s.published.Load(), PublishErrors: s.publishErrors.Load(),
		Received: s.received.Load(), Repaired: s.repaired.Load(), Lost: s.lost.Load(), Duplicates: s.duplicates.Load(),
		PresenceReceived: s.presenceReceived.Load(), DirectReceived: s.directReceived.Load(), Resets: s.resets.Load(),
		NodesGone: s.nodesGone.Load(), SlowConsumer: s.slow.Load(), Reconnects: s.reconnects.Load(),
		Disconnects: s.disconnects.Load(), Nodes: b.liveNodes(), LagSum: time.Duration(s.lag.sum.Load()),
		ControlReceived: s.controlReceived.Load(), Recreated: s.recreated.Load(), DroppedBeats: s.droppedBeats.Load(),
		DroppedRules: s.droppedRules.Load(), StreamsDeleted: s.streamsDeleted.Load(),
		Stalls: s.stalls.Load(), Beats: s.beats.Load(), PublishRetries: s.retries.Load(), PublishTimeouts: s.publishTimeouts.Load(),
		BufferFull: s.bufferFull.Load(), Overtaken: s.overtook.Load(), FetchRetries: s.fetchRetries.Load(),
		ProvisionRetries: s.provisionRetries.Load(), LateAcks: s.lateAcks.Load(), TailRepairs: s.tailRepairs.Load(), DroppedReads: s.droppedReads.Load()}
	st.BufferedBytes, st.BufferedMsgs = b.out.buffered()
	st.LagCounts = make([]uint64, len(s.lag.counts))
	for i := range s.lag.counts {
		st.LagCounts[i] = s.lag.counts[i].Load()
	}
	return st
}
