// Package metrics exposes Parley's figures to Prometheus: the engine's
// (connections, traffic, writes and batches, latencies, slow consumers,
// heartbeats) and the chat's (rooms, members, messages, presence, rate
// limiting, errors), with the Go and process collectors and a
// parley_build_info gauge.
//
// Nothing is counted here: the engine and the chat keep atomic counters on
// their hot paths, and the collector reads a snapshot of them at each
// scrape, so metrics cost nothing per message. No metric has a
// per-connection or per-nick label; every label has a small fixed set of
// values. It is the only package that imports Prometheus; it sees the chat
// through ChatStats, so it depends on the engine alone.
package metrics
