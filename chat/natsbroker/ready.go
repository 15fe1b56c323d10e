package natsbroker

import (
	"context"
	"fmt"
)

// Ready reports whether the broker can do its work now: connected to
// NATS, with JetStream (the rooms' logs, the rules, the read positions)
// answering within ctx. An orchestrator's readiness probe asks it
// (parley serve's /readyz).
func (b *Broker) Ready(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return fmt.Errorf("natsbroker: not connected to NATS (%s)", b.nc.Status())
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("natsbroker: JetStream does not answer: %w", err)
	}
	return nil
}
