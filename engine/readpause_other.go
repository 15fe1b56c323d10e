//go:build !linux

package engine

import "github.com/lesismal/nbio"

// setReading is not available on this system: pausing a client relies on
// the socket's low-water mark alone.
func setReading(*nbio.Conn, bool) bool { return false }
