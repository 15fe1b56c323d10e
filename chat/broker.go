package chat

// Broker carries room messages between the hubs that have members in a
// room: one hub in a single process (MemoryBroker), several nodes in a
// cluster.
//
// Contract:
//   - Delivery is at most once: a publication reaches each subscribed hub
//     once or not at all (sequence numbers let clients see gaps).
//   - Order: publications to one room from one hub are delivered in publish
//     order.
//   - The publishing hub receives its own publications if subscribed.
//   - Handler calls for one room are not concurrent with each other.
type Broker interface {
	// Run starts delivering publications to h. The hub calls it once,
	// before any other method.
	Run(h BrokerHandler) error

	// Publish delivers data, an encoded message event of room, to every hub
	// subscribed to room. It must not block for long: hubs call it while
	// holding the room's lock.
	Publish(room string, data []byte) error

	// Subscribe makes this hub receive room's publications; Unsubscribe
	// stops it. Subscribing twice is the same as once.
	Subscribe(room string) error
	Unsubscribe(room string) error

	// Close stops deliveries and releases the broker's resources.
	Close() error
}

// BrokerHandler receives publications; the Hub implements it.
type BrokerHandler interface {
	// HandlePublication is called for each publication to a subscribed
	// room. data is the publisher's bytes or a broker's copy; neither side
	// modifies it afterwards.
	HandlePublication(room string, data []byte)
}
