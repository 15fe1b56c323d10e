// Package chat is Parley's chat application on the engine's endpoint API:
// rooms with history and presence, nicknames, direct messages and limits,
// spoken as JSON text frames (docs/PROTOCOL.md). A text frame that is not a
// JSON object is said in the default room, so plain clients (the seed's
// page, wscat) still chat.
//
// Hub is the engine.Application. Each room is an engine.Group, so a room
// message is encoded once and fanned out by the engine's writers, one write
// per member per round. Room traffic passes through a Broker: the in-memory
// MemoryBroker (one process, as fast as a direct call) by default.
//
// Concurrency: the engine calls the Hub's callbacks for one client in
// order; different clients' callbacks run concurrently. Shared state is
// sharded (clients) or locked per room; a room's lock is held while its
// next sequence number is taken, its history appended and its message
// published, so members see messages in sequence order.
package chat
