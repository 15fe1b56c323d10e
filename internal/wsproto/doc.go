// Package wsproto is the RFC 6455 wire format shared by Parley's server
// (engine) and its load generator (loadtest): frame headers, masking, close
// payloads and the opening-handshake key.
//
// It does no I/O and holds no state. Encoding appends to a caller's buffer,
// so a frame can be built once and written to many connections; parsing
// reads headers out of a byte slice and reports how many bytes it needs.
// Role-specific rules (a server requires masked frames, a client forbids
// them) are checked by the callers, which know their role.
package wsproto
