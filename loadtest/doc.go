// Package loadtest is Parley's load generator. It runs on nbio's client side
// with no goroutine per connection: a bounded pool of dialers opens TCP
// connections bound to a range of loopback source addresses (so ephemeral
// ports never run out) and upgrades them through nbhttp's client; after
// that each connection is a few hundred bytes parsed on an nbio poller.
//
// Targets and sources must be loopback addresses, and every run is bounded
// by Config.TimeLimit. Today it runs connect-and-hold (Run): open the
// clients, hold them, report connect rate and latency, failures by cause,
// connections lost while held, and resident memory per connection on both
// sides.
package loadtest
