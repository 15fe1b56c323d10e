package engine

import (
	"errors"
	"fmt"
	"net/http"
)

// Errors returned by the engine.
var (
	// ErrServerClosed is returned by Start after Shutdown or Close, and marks
	// a normal end.
	ErrServerClosed = errors.New("engine: server closed")

	// ErrUnknownClient is returned when sending to, closing or querying a
	// client id the endpoint does not know (never connected, or gone).
	ErrUnknownClient = errors.New("engine: unknown client")

	// ErrClientClosing is returned when sending to a client that is being
	// closed: its close frame is queued, and nothing may follow it.
	ErrClientClosing = errors.New("engine: client is closing")

	// ErrInvalidUTF8 is returned when a text message is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("engine: text message is not valid UTF-8")

	// ErrInvalidMessageType is returned for a MessageType other than Text
	// or Binary.
	ErrInvalidMessageType = errors.New("engine: invalid message type")

	// ErrInvalidCloseCode is returned by Endpoint.Close for a code that may
	// not be sent in a close frame.
	ErrInvalidCloseCode = errors.New("engine: close code may not be sent")

	// ErrStarted is returned when the server is configured after Start.
	ErrStarted = errors.New("engine: server already started")
)

// HTTPError refuses a WebSocket handshake with an HTTP status and body.
// Application.OnHandshake returns one to turn a client away; any other error
// is answered with 500. The body is sent as text/plain (with nosniff)
// unless Header sets a Content-Type.
type HTTPError struct {
	Status int
	Body   string
	// Header holds extra response headers, such as Retry-After. May be nil.
	Header http.Header
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("engine: handshake refused with %d %s", e.Status, http.StatusText(e.Status))
}
