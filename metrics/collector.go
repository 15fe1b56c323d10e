package metrics

import (
	"sort"
	"strconv"

	"github.com/parleyhq/parley/engine"
	"github.com/prometheus/client_golang/prometheus"
)

func newDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The families, by name. The README's metric table lists the same.
var (
	mConnections    = newDesc("parley_connections", "Open WebSocket clients.")
	mAccepted       = newDesc("parley_connections_accepted_total", "WebSocket upgrades completed.")
	mEvicted        = newDesc("parley_connections_evicted_total", "Guests that never sent a message, closed (1013) to make room for a new client when the server was full.")
	mClosed         = newDesc("parley_connections_closed_total", "Clients gone, by close-code class (normal, going_away, protocol_error, invalid_data, policy, too_big, internal_error, abnormal, other).", "code")
	mRefused        = newDesc("parley_handshakes_refused_total", "Upgrade requests refused, by reason (origin, limit, address, network, malformed; the chat's: token_missing, token_invalid, token_expired, token_not_yet_valid, token_audience, forbidden_room, banned, bad_request; application for another application's).", "reason")
	mRateClosed     = newDesc("parley_rate_limit_closes_total", "Clients closed for sending too many frames or bytes per second (1008).")
	mRecvMessages   = newDesc("parley_messages_received_total", "Data messages received from clients.")
	mRecvFrames     = newDesc("parley_received_frames_total", "WebSocket frames received, control frames included.")
	mRecvBytes      = newDesc("parley_received_bytes_total", "Bytes received from clients after the upgrade.")
	mDeliveries     = newDesc("parley_deliveries_total", "Data messages written to clients: one per message per recipient.")
	mSentFrames     = newDesc("parley_sent_frames_total", "WebSocket frames written, control frames included.")
	mSentBytes      = newDesc("parley_sent_bytes_total", "Bytes written to client sockets.")
	mEncoded        = newDesc("parley_frames_encoded_total", "Frames built by the send API: one per send, however many recipients.")
	mWrites         = newDesc("parley_writes_total", "Write calls on client sockets.")
	mRounds         = newDesc("parley_writer_rounds_total", "Writer rounds that wrote anything.")
	mSenderRounds   = newDesc("parley_writer_sender_rounds_total", "Writer rounds run by the sending goroutine: a lone reply to an idle writer, written without waking it.")
	mBatch          = newDesc("parley_write_batch_frames", "Frames per write: how many messages each system call carried.")
	mFlush          = newDesc("parley_flush_duration_seconds", "Duration of writer rounds.")
	mWriteDelay     = newDesc("parley_write_delay_seconds", "Age of the oldest message in each write: from the send call to the write.")
	mDispatch       = newDesc("parley_dispatch_delay_seconds", "From a message's arrival to the start of its handling (executor queueing).")
	mQueued         = newDesc("parley_queued_bytes", "Bytes handed to client sockets that the kernel has not taken yet.")
	mPendingIn      = newDesc("parley_pending_input_bytes", "Bytes of received messages the application has not handled yet.")
	mInputPaused    = newDesc("parley_input_paused_total", "Times a client's socket stopped being read because its messages waited for the application (TCP backpressure).")
	mSkipped        = newDesc("parley_slow_consumer_skips_total", "Deliveries skipped because the recipient was behind (past the soft queue limit).")
	mSlowClosed     = newDesc("parley_slow_consumers_closed_total", "Clients closed as slow consumers (1008).")
	mHeartbeat      = newDesc("parley_heartbeat_timeouts_total", "Clients closed for not answering a ping (1008).")
	mPings          = newDesc("parley_pings_sent_total", "Heartbeat pings sent.")
	mPanics         = newDesc("parley_app_panics_total", "Panics recovered in application callbacks.")
	mDeflateClients = newDesc("parley_deflate_clients_total", "Clients that negotiated permessage-deflate.")
	mCompressed     = newDesc("parley_compressed_frames_total", "Frames compressed: once each, however many recipients share them.")
	mCompressedIn   = newDesc("parley_compression_input_bytes_total", "Payload bytes of the frames compressed.")
	mCompressedOut  = newDesc("parley_compression_output_bytes_total", "Their compressed bytes.")
	mInflated       = newDesc("parley_inflated_messages_total", "Compressed messages received and inflated.")
	mRooms          = newDesc("parley_rooms", "Chat rooms open.")
	mMembers        = newDesc("parley_room_members", "Room memberships (a client in two rooms counts twice).")
	mPublished      = newDesc("parley_broker_published_total", "Room messages this node published to the broker.")
	mReceived       = newDesc("parley_broker_received_total", "Room messages the broker delivered to this node.")
	mDMs            = newDesc("parley_direct_messages_total", "Direct messages sent.")
	mRateLimited    = newDesc("parley_rate_limited_total", "Chat requests refused by the rate limit.")
	mPresenceChange = newDesc("parley_presence_changes_total", "Joins, leaves and nick changes in rooms.")
	mPresenceSent   = newDesc("parley_presence_messages_total", "Presence messages sent, each to a whole room: changes coalesced into them.")
	mChatErrors     = newDesc("parley_chat_errors_total", "Errors sent to chat clients, by code.", "code")
	mPublishFailed  = newDesc("parley_broker_publish_failed_total", "Room messages the broker could not take: their senders got not_delivered.")
	mReadMarks      = newDesc("parley_read_marks_total", "Read marks of signed-in users that moved their position (each pushed to the user's connections on every node).")
	mReadErrors     = newDesc("parley_read_errors_total", "Read-state calls that failed: store (the store failed them) or queue (too many waited for it).", "reason")
	mReactFrames    = newDesc("parley_reaction_frames_total", "Reactions events sent, each to a whole room for all the reactions since its last one.")
	mUnread         = newDesc("parley_unread_notes_total", "Mentions of and DMs to signed-in users: notified (unread after --notify-delay), read (in time), dropped (too many waited).", "result")
	mNotify         = newDesc("parley_notify_posts_total", "Unread notifications posted to --notify-url: sent (2xx), retried, failed (given up, or refused with a 4xx), dropped (the queue was full).", "result")
	mNotifyQueued   = newDesc("parley_notify_queued", "Unread notifications waiting to be posted (or posted again).")
	mMemTrims       = newDesc("parley_memory_trims_total", "Times the quiet process collected and gave its unused heap back to the system (--memory-trim-after).")
	mMemFreed       = newDesc("parley_memory_trimmed_bytes_total", "Bytes of heap those trims gave back to the system.")
	mUsers          = newDesc("parley_users", "Signed-in users connected to this node, each counted once however many connections it has.")
	mBusDropped     = newDesc("parley_bus_dropped_total", "Messages from the cluster bus refused (they did not decode strictly, or held what no client could send), by kind (message, presence, direct, control, rule, heartbeat).", "kind")
	mAPIRequests    = newDesc("parley_api_requests_total", "Server API calls, by route and status.", "route", "status")

	// A cluster's NATS broker.
	mNATSConnected  = newDesc("parley_nats_connected", "1 while the node is connected to NATS.")
	mClusterNodes   = newDesc("parley_cluster_nodes", "Other live nodes this node hears from.")
	mNATSPublished  = newDesc("parley_nats_published_total", "Room messages accepted for NATS.")
	mNATSPubErrors  = newDesc("parley_nats_publish_errors_total", "Room messages given up (not stored within the publish timeout, refused, the outbox full): their senders got not_delivered.")
	mNATSRetries    = newDesc("parley_nats_publish_retries_total", "Room messages sent to NATS again (an outage, a timeout, a leader election), stored once all the same.")
	mNATSPubTimeout = newDesc("parley_nats_publish_timeouts_total", "Sends of room messages NATS did not acknowledge within 2 s (their room's queue was sent again).")
	mNATSBufFull    = newDesc("parley_nats_buffer_full_total", "Room messages refused at once because --nats-buffer bytes waited for NATS.")
	mNATSOvertaken  = newDesc("parley_nats_overtaken_total", "Room messages NATS stored before one accepted earlier in their room (the outbox's order broken; should stay 0).")
	mNATSBufBytes   = newDesc("parley_nats_buffered_bytes", "Bytes of room messages waiting for NATS (unacknowledged, or kept through an outage).")
	mNATSBufMsgs    = newDesc("parley_nats_buffered_messages", "Room messages waiting for NATS (unacknowledged, or kept through an outage).")
	mNATSProvRetry  = newDesc("parley_nats_provision_retries_total", "Requests making or opening a stream or bucket that went unanswered and were made again (a JetStream cluster answers one of several made at once).")
	mNATSLateAcks   = newDesc("parley_nats_late_acks_total", "Acknowledgements of room messages that came after their send timed out (2 s), taken all the same.")
	mNATSTailRepair = newDesc("parley_nats_tail_repairs_total", "Repairs started by another node's heartbeat naming a room message this node had not received (its republished copy was lost).")
	mNATSFetchRetry = newDesc("parley_nats_fetch_retries_total", "Repairs of missed room messages that could not read their stream (NATS away, no leader) and tried again.")
	mNATSReceived   = newDesc("parley_nats_received_total", "Room messages received from NATS (repaired ones included).")
	mNATSRepaired   = newDesc("parley_nats_repaired_total", "Room messages missed, then fetched from their stream.")
	mNATSLost       = newDesc("parley_nats_lost_total", "Room messages missed that their stream no longer had.")
	mNATSDuplicates = newDesc("parley_nats_duplicates_total", "Room messages received twice (dropped).")
	mNATSPresence   = newDesc("parley_nats_presence_received_total", "Presence news received from other nodes.")
	mNATSDirect     = newDesc("parley_nats_direct_received_total", "Direct messages received from other nodes.")
	mNATSResets     = newDesc("parley_nats_room_resets_total", "Rooms whose stream NATS lost: their log began again.")
	mNATSNodesGone  = newDesc("parley_nats_nodes_gone_total", "Nodes that left the cluster or went silent.")
	mNATSSlow       = newDesc("parley_nats_slow_consumer_total", "Times NATS dropped messages for this node (they are fetched again).")
	mNATSReconnects = newDesc("parley_nats_reconnects_total", "Reconnections to NATS.")
	mNATSDisconnect = newDesc("parley_nats_disconnects_total", "Losses of the NATS connection.")
	mNATSLag        = newDesc("parley_nats_lag_seconds", "From a room message's storing in its stream to its arrival at this node.")
	mNATSControl    = newDesc("parley_nats_control_received_total", "Broadcasts received (DMs to users, disconnections).")
	mNATSRecreated  = newDesc("parley_nats_streams_recreated_total", "Room streams made again after they were deleted under this node.")
	mNATSDeleted    = newDesc("parley_nats_streams_deleted_total", "Streams of rooms no node had open for the room TTL, deleted by this node.")
	mNATSStalls     = newDesc("parley_nats_stalls_total", "Heartbeat ticks that came late because this node stalled (GC, a starved CPU): no other node was judged silent on them.")
)

// collector reads a snapshot of the sources at each scrape.
type collector struct{ src Sources }

func newCollector(src Sources) *collector { return &collector{src: src} }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	if c.src.Engine != nil {
		for _, d := range []*prometheus.Desc{mConnections, mAccepted, mEvicted, mClosed, mRefused, mRecvMessages, mRecvFrames,
			mRecvBytes, mDeliveries, mSentFrames, mSentBytes, mEncoded, mWrites, mRounds, mSenderRounds, mBatch, mFlush, mWriteDelay,
			mDispatch, mQueued, mSkipped, mSlowClosed, mHeartbeat, mPings, mPanics, mRateClosed, mPendingIn, mInputPaused,
			mDeflateClients, mCompressed, mCompressedIn, mCompressedOut, mInflated} {
			ch <- d
		}
	}
	if c.src.Chat != nil {
		for _, d := range []*prometheus.Desc{mRooms, mMembers, mPublished, mReceived, mDMs, mRateLimited,
			mPresenceChange, mPresenceSent, mChatErrors, mPublishFailed, mUsers, mBusDropped, mReadMarks, mReadErrors, mUnread, mReactFrames} {
			ch <- d
		}
	}
	if c.src.Broker != nil {
		for _, d := range []*prometheus.Desc{mNATSConnected, mClusterNodes, mNATSPublished, mNATSPubErrors, mNATSReceived,
			mNATSRepaired, mNATSLost, mNATSDuplicates, mNATSPresence, mNATSDirect, mNATSResets, mNATSNodesGone, mNATSSlow,
			mNATSReconnects, mNATSDisconnect, mNATSLag, mNATSControl, mNATSRecreated, mNATSDeleted, mNATSStalls,
			mNATSRetries, mNATSPubTimeout, mNATSBufFull, mNATSOvertaken, mNATSBufBytes, mNATSBufMsgs, mNATSFetchRetry, mNATSProvRetry, mNATSLateAcks, mNATSTailRepair} {
			ch <- d
		}
	}
	if c.src.API != nil {
		ch <- mAPIRequests
	}
	if c.src.Notify != nil {
		ch <- mNotify
		ch <- mNotifyQueued
	}
	if c.src.Memory != nil {
		ch <- mMemTrims
		ch <- mMemFreed
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if c.src.Engine != nil {
		// The chat tells its refusals by reason: the engine's total of
		// the application's would count them twice.
		collectEngine(ch, c.src.Engine(), c.src.Chat == nil)
	}
	var chat ChatStats
	if c.src.Chat != nil {
		chat = c.src.Chat()
		collectChat(ch, chat)
	}
	if c.src.Broker != nil {
		collectBroker(ch, c.src.Broker(), chat.Dropped)
	} else if c.src.Chat != nil {
		for _, k := range sortedKeys(chat.Dropped) {
			counter(ch, mBusDropped, chat.Dropped[k], k)
		}
	}
	if c.src.API != nil {
		hits := c.src.API()
		sort.Slice(hits, func(i, j int) bool {
			return hits[i].Route < hits[j].Route || hits[i].Route == hits[j].Route && hits[i].Status < hits[j].Status
		})
		for _, h := range hits {
			counter(ch, mAPIRequests, h.Count, h.Route, strconv.Itoa(h.Status))
		}
	}
	if c.src.Notify != nil {
		st := c.src.Notify()
		counter(ch, mNotify, st.Sent, "sent")
		counter(ch, mNotify, st.Retried, "retried")
		counter(ch, mNotify, st.Failed, "failed")
		counter(ch, mNotify, st.Dropped, "dropped")
		gauge(ch, mNotifyQueued, float64(st.Queued))
	}
	if c.src.Memory != nil {
		st := c.src.Memory()
		counter(ch, mMemTrims, st.Trims)
		counter(ch, mMemFreed, st.FreedBytes)
	}
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
}

// histogram turns per-bucket counts (not cumulative) with upper bounds
// (negative: +Inf) into a Prometheus histogram.
func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, counts []uint64, bound func(int) float64, sum float64) {
	buckets := make(map[float64]uint64, len(counts))
	var cum uint64
	for i, n := range counts {
		cum += n
		if b := bound(i); b >= 0 {
			buckets[b] = cum
		}
	}
	ch <- prometheus.MustNewConstHistogram(d, cum, sum, buckets)
}

func seconds(i int) float64 {
	d := engine.FlushBucketUpperBound(i)
	if d < 0 {
		return -1
	}
	return d.Seconds()
}

func frames(i int) float64 { return float64(engine.BatchBucketUpperBound(i)) }

func collectEngine(ch chan<- prometheus.Metric, st engine.Stats, appRefusals bool) {
	gauge(ch, mConnections, float64(st.Clients))
	counter(ch, mAccepted, st.Accepted)
	counter(ch, mEvicted, st.EvictedSilent)
	for i, class := range engine.CloseClasses() {
		counter(ch, mClosed, st.ClosedByCode[i], class)
	}
	counter(ch, mRefused, st.RefusedOrigin, "origin")
	counter(ch, mRefused, st.RefusedLimit, "limit")
	counter(ch, mRefused, st.RefusedAddr, "address")
	counter(ch, mRefused, st.RefusedNetwork, "network")
	counter(ch, mRefused, st.RefusedMalformed, "malformed")
	if appRefusals {
		counter(ch, mRefused, st.RefusedByApp, "application")
	}
	counter(ch, mRecvMessages, st.MessagesRead)
	counter(ch, mRecvFrames, st.FramesRead)
	counter(ch, mRecvBytes, st.BytesRead)
	counter(ch, mDeliveries, st.Deliveries)
	counter(ch, mSentFrames, st.FramesWritten)
	counter(ch, mSentBytes, st.BytesWritten)
	counter(ch, mEncoded, st.FramesEncoded)
	counter(ch, mWrites, st.Writes)
	counter(ch, mRounds, st.Rounds)
	counter(ch, mSenderRounds, st.SenderRounds)
	histogram(ch, mBatch, st.BatchSizeBuckets[:], frames, float64(st.FramesWritten))
	histogram(ch, mFlush, st.FlushBuckets[:], seconds, st.FlushSeconds)
	histogram(ch, mWriteDelay, st.WriteDelayBuckets[:], seconds, st.WriteDelaySeconds)
	histogram(ch, mDispatch, st.DispatchBuckets[:], seconds, st.DispatchSeconds)
	gauge(ch, mQueued, float64(st.QueuedBytes))
	gauge(ch, mPendingIn, float64(st.PendingInput))
	counter(ch, mInputPaused, st.InputPaused)
	counter(ch, mSkipped, st.SkippedSlow)
	counter(ch, mSlowClosed, st.ClosedSlow)
	counter(ch, mHeartbeat, st.HeartbeatTimeouts)
	counter(ch, mPings, st.PingsSent)
	counter(ch, mPanics, st.AppPanics)
	counter(ch, mDeflateClients, st.DeflateClients)
	counter(ch, mCompressed, st.Compressed)
	counter(ch, mCompressedIn, st.CompressedIn)
	counter(ch, mCompressedOut, st.CompressedOut)
	counter(ch, mInflated, st.Inflated)
	counter(ch, mRateClosed, st.RateLimited)
}

func collectChat(ch chan<- prometheus.Metric, st ChatStats) {
	gauge(ch, mRooms, float64(st.Rooms))
	gauge(ch, mMembers, float64(st.Members))
	counter(ch, mPublished, st.Published)
	counter(ch, mReceived, st.Received)
	counter(ch, mDMs, st.DMs)
	counter(ch, mRateLimited, st.RateLimited)
	counter(ch, mPresenceChange, st.PresenceChanges)
	counter(ch, mPresenceSent, st.PresenceSent)
	counter(ch, mPublishFailed, st.PublishFailed)
	counter(ch, mReadMarks, st.Reads)
	counter(ch, mReadErrors, st.ReadsFailed, "store")
	counter(ch, mReadErrors, st.ReadsRefused, "queue")
	counter(ch, mReactFrames, st.ReactionFrames)
	counter(ch, mUnread, st.Notified, "notified")
	counter(ch, mUnread, st.NotesRead, "read")
	counter(ch, mUnread, st.NotesDropped, "dropped")
	for _, code := range sortedKeys(st.Errors) {
		counter(ch, mChatErrors, st.Errors[code], code)
	}
	gauge(ch, mUsers, float64(st.Users))
	for _, r := range sortedKeys(st.Refused) {
		counter(ch, mRefused, st.Refused[r], r)
	}
}

func collectBroker(ch chan<- prometheus.Metric, st BrokerStats, dropped map[string]uint64) {
	all := map[string]uint64{"heartbeat": st.DroppedBeats}
	for k, v := range dropped {
		all[k] = v
	}
	all["rule"] += st.DroppedRules
	for _, k := range sortedKeys(all) {
		counter(ch, mBusDropped, all[k], k)
	}
	counter(ch, mNATSControl, st.ControlReceived)
	counter(ch, mNATSRecreated, st.Recreated)
	counter(ch, mNATSDeleted, st.StreamsDeleted)
	counter(ch, mNATSStalls, st.Stalls)
	counter(ch, mNATSRetries, st.PublishRetries)
	counter(ch, mNATSPubTimeout, st.PublishTimeouts)
	counter(ch, mNATSBufFull, st.BufferFull)
	counter(ch, mNATSOvertaken, st.Overtaken)
	gauge(ch, mNATSBufBytes, float64(st.BufferedBytes))
	gauge(ch, mNATSBufMsgs, float64(st.BufferedMsgs))
	counter(ch, mNATSFetchRetry, st.FetchRetries)
	counter(ch, mNATSProvRetry, st.ProvisionRetries)
	counter(ch, mNATSLateAcks, st.LateAcks)
	counter(ch, mNATSTailRepair, st.TailRepairs)
	connected := 0.0
	if st.Connected {
		connected = 1
	}
	gauge(ch, mNATSConnected, connected)
	gauge(ch, mClusterNodes, float64(st.Nodes))
	counter(ch, mNATSPublished, st.Published)
	counter(ch, mNATSPubErrors, st.PublishErrors)
	counter(ch, mNATSReceived, st.Received)
	counter(ch, mNATSRepaired, st.Repaired)
	counter(ch, mNATSLost, st.Lost)
	counter(ch, mNATSDuplicates, st.Duplicates)
	counter(ch, mNATSPresence, st.PresenceReceived)
	counter(ch, mNATSDirect, st.DirectReceived)
	counter(ch, mNATSResets, st.Resets)
	counter(ch, mNATSNodesGone, st.NodesGone)
	counter(ch, mNATSSlow, st.SlowConsumer)
	counter(ch, mNATSReconnects, st.Reconnects)
	counter(ch, mNATSDisconnect, st.Disconnects)
	histogram(ch, mNATSLag, st.LagCounts, func(i int) float64 {
		if i < len(st.LagBounds) {
			return st.LagBounds[i]
		}
		return -1
	}, st.LagSum)
}
