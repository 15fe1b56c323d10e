// Package chat is Parley's chat application on the engine's endpoint API.
//
// For now it holds Seed, the Aerys demo chat's behaviour: every text message
// is broadcast to every client, prefixed with the sender's IP. The full chat
// (rooms, nicknames, history, presence, direct messages) replaces it.
package chat
