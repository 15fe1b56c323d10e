// Package cfgerr is the error a package's Config.Validate returns: it
// names the field at fault, so callers and tests tell one from another
// with errors.As and errors.Is, never by the message's text. Each package
// re-exports it under its own name (engine.ConfigError, chat.ConfigError,
// natsbroker.ConfigError, loadtest.ConfigError).
package cfgerr

import (
	"errors"
	"fmt"
)

// ErrInvalid is what every configuration error Is.
var ErrInvalid = errors.New("invalid configuration")

// Error is an invalid configuration: Field is the Config field at fault
// (the first of two that do not go together), Msg the whole message, as
// the package words it ("engine: Writers (-1) must be positive").
type Error struct {
	Field string
	Msg   string
	err   error // wrapped by Msg's %w, if any
}

// New returns an Error for field, its message formatted as fmt.Errorf
// would (a %w verb is wrapped).
func New(field, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Field: field, Msg: err.Error(), err: errors.Unwrap(err)}
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the error the message wrapped, if any.
func (e *Error) Unwrap() error { return e.err }

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }
