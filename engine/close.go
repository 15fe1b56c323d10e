package engine

import (
	"errors"
	"fmt"
)

// StatusCode is a WebSocket close code (RFC 6455 section 7.4).
type StatusCode int

// The close codes Parley sends or reports. Codes 4000-4999 are free for
// applications; Parley itself uses none of them.
const (
	StatusNormalClosure   StatusCode = 1000 // the purpose of the connection is fulfilled
	StatusGoingAway       StatusCode = 1001 // the server shuts down, or the browser leaves the page
	StatusProtocolError   StatusCode = 1002 // the peer broke RFC 6455
	StatusUnsupportedData StatusCode = 1003 // a data type the endpoint cannot accept
	// StatusNoStatusRcvd is reported when the peer's close frame had no code.
	// It is never sent.
	StatusNoStatusRcvd StatusCode = 1005
	// StatusAbnormalClosure is reported when the connection dropped without a
	// close frame. It is never sent.
	StatusAbnormalClosure  StatusCode = 1006
	StatusInvalidPayload   StatusCode = 1007 // text that is not UTF-8
	StatusPolicyViolation  StatusCode = 1008 // a limit or rule of the server (rate, heartbeat, slow consumer)
	StatusMessageTooBig    StatusCode = 1009 // a message over the size limit
	StatusMandatoryExt     StatusCode = 1010 // the client needs an extension the server did not offer
	StatusInternalError    StatusCode = 1011 // the application failed while handling the client
	StatusTryAgainLater    StatusCode = 1013 // the server is overloaded
	StatusTLSHandshakeFail StatusCode = 1015 // reported only
)

// The reasons the engine closes a client with.
const (
	ReasonShutdown      = "server shutting down"                                         // 1001, Shutdown
	ReasonSlowConsumer  = "slow consumer"                                                // 1008: Config.SendQueueHardLimit or Config.SlowConsumerTimeout
	ReasonHeartbeat     = "heartbeat timeout"                                            // 1008: Config.HeartbeatInterval and Config.HeartbeatTimeout
	ReasonInflateRate   = "inflated byte rate limit exceeded"                            // 1008: Config.MaxInflatedBytesPerSecond
	ReasonServerFull    = "the server is full: a connection that sent nothing made room" // 1013: a silent guest evicted
	ReasonInternalError = "internal server error"                                        // 1011: the application panicked
)

var statusNames = map[StatusCode]string{
	StatusNormalClosure:    "normal closure",
	StatusGoingAway:        "going away",
	StatusProtocolError:    "protocol error",
	StatusUnsupportedData:  "unsupported data",
	StatusNoStatusRcvd:     "no status received",
	StatusAbnormalClosure:  "abnormal closure",
	StatusInvalidPayload:   "invalid payload data",
	StatusPolicyViolation:  "policy violation",
	StatusMessageTooBig:    "message too big",
	StatusMandatoryExt:     "mandatory extension",
	StatusInternalError:    "internal error",
	StatusTryAgainLater:    "try again later",
	StatusTLSHandshakeFail: "TLS handshake failure",
}

// String returns the code's name and number, e.g. "going away (1001)".
func (c StatusCode) String() string {
	if n, ok := statusNames[c]; ok {
		return fmt.Sprintf("%s (%d)", n, int(c))
	}
	if c >= 4000 && c <= 4999 {
		return fmt.Sprintf("application code (%d)", int(c))
	}
	return fmt.Sprintf("close code (%d)", int(c))
}

// CloseError is a close code and reason. The engine reports how a client
// left as a CloseError, and Endpoint.Close sends one.
type CloseError struct {
	Code   StatusCode
	Reason string
}

func (e *CloseError) Error() string {
	if e.Reason == "" {
		return "websocket closed: " + e.Code.String()
	}
	return fmt.Sprintf("websocket closed: %s: %s", e.Code, e.Reason)
}

// CloseStatus returns the code of the first CloseError in err's chain, or -1
// if there is none.
func CloseStatus(err error) StatusCode {
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}
