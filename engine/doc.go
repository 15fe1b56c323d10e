// Package engine is Parley's application server: HTTP routes, a read-only
// document root and WebSocket endpoints on one nbio engine, in non-blocking
// mode, with no goroutine per connection. It knows nothing about chat.
//
// A WebSocket application implements Application, the six-callback
// lifecycle of the Aerys server Parley re-creates (start, handshake, open,
// message, close, stop), and sends through the Endpoint it receives in
// OnStart: to one client, a list, or all (except some). See Example for the
// seed's chat written against it.
//
//	srv, err := engine.New(engine.Config{Addr: "localhost:1337"})
//	ep, err := srv.Mount("/ws", app)
//	err = srv.Start()
//	...
//	err = srv.Shutdown(ctx) // close 1001 to every client, then stop
//
// # Concurrency
//
// Sockets are read by a few poller goroutines (Config.Pollers), which parse
// WebSocket frames and must never block. Application callbacks run on an
// executor pool, serialized per client: OnOpen, then each OnMessage in
// order, then OnClose. An endpoint mounted with MountOptions.Inline has
// OnMessage called on the poller itself, in the same order, for
// applications that never block (Echo). Endpoint methods are safe from any
// goroutine.
//
// # The write path
//
// Every client belongs to one of Config.Writers writer shards. A send
// encodes its frame once and posts it to the shards of its recipients; a
// shard collects, for each recipient, every frame posted since its last
// round and writes them with one Write: one system call per client per
// round, however many messages. A shard loops while work keeps arriving
// (group commit), so an idle server sends at once and a busy one batches by
// itself. A send to one client that finds its shard idle runs that round on
// the sender's goroutine: a reply wakes no other goroutine. Because one goroutine writes each client's data, frames of one
// client leave in the order they were sent, and the bytes queued for it are
// known exactly (bytes handed to the socket minus bytes nbio reports
// written). A client backed up past Config.SendQueueSoftLimit misses
// messages; past SendQueueHardLimit, or backed up for SlowConsumerTimeout,
// it is closed with 1008. Idle clients hold no buffer.
//
// # Protocol
//
// The engine parses RFC 6455 itself (nbio's websocket package is not used):
// it answers malformed upgrades with 400, 405 or 426, refuses foreign
// origins with 403 (see Config.AllowedOrigins), fails protocol errors with
// 1002, invalid UTF-8 with 1007 and oversized messages with 1009, delivers
// empty messages, and completes the close handshake before dropping the
// socket. Heartbeats ping clients that have been silent for
// Config.HeartbeatInterval and close those that do not answer.
//
// Package engine imports neither chat nor metrics: observers read
// Server.Stats and Endpoint.Info.
package engine
