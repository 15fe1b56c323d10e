// Package chat is Parley's chat application on the engine's endpoint API:
// rooms with history and presence, nicknames, direct messages and limits,
// spoken as JSON text frames (docs/PROTOCOL.md, whose Go types are package
// protocol). A text frame that is not a JSON object is said in the default
// room, so plain clients (the seed's page, wscat) still chat.
//
// Hub is the engine.Application. Each room is an engine.Group, so a room
// message is encoded once and fanned out by the engine's writers, one write
// per member per round. Room traffic passes through a Broker, which numbers
// each room's messages and hands them back to every hub with members in the
// room: the in-memory MemoryBroker (one process, as fast as a direct call)
// by default, or chat/natsbroker to share rooms between nodes through NATS.
// chat/brokertest is the conformance test of Broker implementations.
//
// Concurrency: the engine calls the Hub's callbacks for one client in
// order; different clients' callbacks run concurrently. Shared state is
// sharded (clients) or locked per room. The broker delivers a room's
// messages one at a time, in sequence order; the room's lock is held while
// a message enters the history and goes to the members, and while a member
// joins, so a joiner gets the history and then every later message, none
// missed or repeated.
package chat
