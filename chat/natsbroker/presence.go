package natsbroker

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// PublishPresence implements chat.Broker.
func (b *Broker) PublishPresence(room string, data []byte) error {
	m := nats.NewMsg(b.cfg.Prefix + ".presence." + token(room))
	m.Header.Set(hdrNode, b.cfg.Node)
	m.Data = data
	if err := b.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("natsbroker: presence of %q: %w", room, err)
	}
	return nil
}
