package natsbroker

// SetTestHooks makes b call fetch before each repair fetches a room's
// missed messages, and drop each room message it receives, skipping those
// for which it reports true (as if NATS had lost them). Set before Run.
func SetTestHooks(b *Broker, fetch func(room string), drop func(room string, seq uint64) bool) {
	b.testFetch, b.testDrop = fetch, drop
}

// SetBeatHook makes b call beat after it publishes each heartbeat, and its
// bye. Set before Run.
func SetBeatHook(b *Broker, beat func(bye bool)) { b.testBeat = beat }

// SetReopenHook makes b call open after each room stream it reopens after
// a reconnect (its catch-up and audits scheduled). Set before Run.
func SetReopenHook(b *Broker, open func(room string)) { b.testOpen = open }

// ForceReconnect makes b's NATS connection drop and reconnect.
func ForceReconnect(b *Broker) error { return b.nc.ForceReconnect() }

// InSubject is the subject a room's messages are published to.
func InSubject(b *Broker, room string) string { return b.cfg.Prefix + ".in." + token(room) }
