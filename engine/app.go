package engine

import (
	"net/http"
	"time"
)

// ClientID identifies a WebSocket client of a Server. Ids start at 1, are
// unique for the life of the Server and never reused.
type ClientID uint64

// MessageType is the type of a WebSocket data message.
type MessageType int

// The data message types.
const (
	Text   MessageType = 1
	Binary MessageType = 2
)

func (t MessageType) String() string {
	switch t {
	case Text:
		return "text"
	case Binary:
		return "binary"
	}
	return "invalid"
}

// Application is a WebSocket application mounted on a path of a Server: the
// lifecycle of the Aerys Websocket interface, in Go.
//
// Callbacks for one client are serialized and come in order: OnOpen, then
// OnMessage for each message in arrival order, then OnClose exactly once.
// Callbacks for different clients run concurrently on the engine's executor
// pool, never on an I/O poller; a callback that blocks holds up only its own
// client, but holds an executor goroutine while it does.
//
// A panic in OnOpen, OnMessage or OnClose is recovered, logged, and closes
// that client with StatusInternalError; the server keeps running.
type Application interface {
	// OnStart is called once by Server.Start before the server accepts
	// connections, with the endpoint the application sends through. An error
	// aborts Start.
	OnStart(ep *Endpoint) error

	// OnHandshake sees each upgrade request that passed the protocol and
	// origin checks. It returns data handed to OnOpen, or an error to refuse
	// the client: an *HTTPError gives the status and body, any other error
	// is answered with 500.
	OnHandshake(r *http.Request) (data any, err error)

	// OnOpen is called once the 101 response is written. From now on the
	// endpoint can send to id.
	OnOpen(id ClientID, data any)

	// OnMessage is called for each complete message. data is valid only
	// until OnMessage returns: copy what you keep.
	OnMessage(id ClientID, typ MessageType, data []byte)

	// OnClose is called once when the client is gone, with the close code
	// and reason: the peer's if it sent a close frame first, the server's if
	// the server closed it, StatusAbnormalClosure if the connection dropped.
	// Sending to id is a no-op from now on.
	OnClose(id ClientID, code StatusCode, reason string)

	// OnStop is called once by Shutdown or Close, after every client's
	// OnClose.
	OnStop()
}

// BaseApplication implements every Application method as a no-op that
// accepts all handshakes. Embed it and override what you need.
type BaseApplication struct{}

// OnStart does nothing.
func (BaseApplication) OnStart(*Endpoint) error { return nil }

// OnHandshake accepts the client, with nil data.
func (BaseApplication) OnHandshake(*http.Request) (any, error) { return nil, nil }

// OnOpen does nothing.
func (BaseApplication) OnOpen(ClientID, any) {}

// OnMessage does nothing.
func (BaseApplication) OnMessage(ClientID, MessageType, []byte) {}

// OnClose does nothing.
func (BaseApplication) OnClose(ClientID, StatusCode, string) {}

// OnStop does nothing.
func (BaseApplication) OnStop() {}

// ClientInfo holds a client's counters, as Aerys' getInfo did. Data
// messages are counted whole; frames include control frames.
type ClientInfo struct {
	ID         ClientID
	RemoteAddr string

	BytesIn     uint64 // bytes read from the socket, frame headers included
	BytesOut    uint64 // bytes handed to the socket, frame headers included
	FramesIn    uint64
	FramesOut   uint64
	MessagesIn  uint64
	MessagesOut uint64

	// QueuedBytes is what the kernel has not yet taken: bytes handed to the
	// connection minus bytes written.
	QueuedBytes int64

	ConnectedAt time.Time
	LastReadAt  time.Time // zero if nothing was read since the upgrade
	LastWriteAt time.Time // zero if nothing was written since the upgrade
}
