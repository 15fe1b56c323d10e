package engine

// Echo is an Application that sends every message back to its sender,
// with its type: the endpoint conformance suites (such as Autobahn's
// fuzzing client) expect. Mount it on a path of its own, with a message
// limit of at least 16 MiB for such a suite:
//
//	srv.MountWith("/echo", &engine.Echo{}, &engine.MountOptions{MaxMessageSize: 16 << 20, Inline: true})
//
// Its OnMessage only queues the reply, so it may run Inline.
type Echo struct {
	BaseApplication
	ep *Endpoint
}

var _ Application = (*Echo)(nil)

// OnStart keeps the endpoint.
func (e *Echo) OnStart(ep *Endpoint) error {
	e.ep = ep
	return nil
}

// OnMessage echoes data with its type.
func (e *Echo) OnMessage(id ClientID, typ MessageType, data []byte) {
	_ = e.ep.Send(id, typ, data)
}
