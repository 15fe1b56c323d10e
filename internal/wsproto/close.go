package wsproto

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"
)

// MaxCloseReason is the longest close reason that fits in a control frame
// after the 2-byte code.
const MaxCloseReason = MaxControlPayload - 2

// Close codes that RFC 6455 section 7.4.1 reserves for reporting: they must
// never appear in a close frame.
const (
	CodeNoStatus     = 1005
	CodeAbnormal     = 1006
	CodeTLSHandshake = 1015
)

// Errors from ParseClosePayload.
var (
	ErrCloseLength = errors.New("wsproto: close payload of 1 byte")
	ErrCloseCode   = errors.New("wsproto: close code not allowed on the wire")
	ErrCloseUTF8   = errors.New("wsproto: close reason is not valid UTF-8")
)

// ValidCloseCode reports whether code may be sent in a close frame:
// 1000-1003, 1007-1014 (the codes IANA registered for the wire) and
// 3000-4999 (registered and private use).
func ValidCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// AppendClosePayload appends a close frame's payload: the code, then reason
// cut to MaxCloseReason bytes without splitting a UTF-8 sequence. A code of
// CodeNoStatus appends nothing (an empty close frame).
func AppendClosePayload(dst []byte, code uint16, reason string) []byte {
	if code == CodeNoStatus {
		return dst
	}
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, TruncateReason(reason)...)
}

// TruncateReason cuts reason to at most MaxCloseReason bytes, backing off to
// a UTF-8 boundary.
func TruncateReason(reason string) string {
	if len(reason) <= MaxCloseReason {
		return reason
	}
	i := MaxCloseReason
	for i > 0 && !utf8.RuneStart(reason[i]) {
		i--
	}
	return reason[:i]
}

// ParseClosePayload parses a received close frame's payload. An empty
// payload yields CodeNoStatus. It fails on a 1-byte payload, a code that is
// not allowed on the wire, or a reason that is not UTF-8, each of which
// RFC 6455 answers with a protocol error (or 1007 for the reason).
func ParseClosePayload(p []byte) (code uint16, reason string, err error) {
	switch len(p) {
	case 0:
		return CodeNoStatus, "", nil
	case 1:
		return 0, "", ErrCloseLength
	}
	code = binary.BigEndian.Uint16(p)
	if !ValidCloseCode(code) {
		return code, "", ErrCloseCode
	}
	if !utf8.Valid(p[2:]) {
		return code, "", ErrCloseUTF8
	}
	return code, string(p[2:]), nil
}
