package client

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/parleyhq/parley/internal/cfgerr"
)

// ConfigError is the error New and Dial return for a Config field that is
// not valid: Field names it. It Is ErrInvalidConfig.
type ConfigError = cfgerr.Error

// ErrInvalidConfig is what every configuration error Is.
var ErrInvalidConfig = cfgerr.ErrInvalid

// Defaults of Config's zero fields.
const (
	DefaultMinBackoff    = 250 * time.Millisecond
	DefaultMaxBackoff    = 10 * time.Second
	DefaultRefreshBefore = 30 * time.Second
	DefaultMaxPending    = 1000
	DefaultEventBuffer   = 256
	DefaultWriteTimeout  = 10 * time.Second
)

// Config configures a Client. Only URL is required; the zero value of
// every other field is its default.
type Config struct {
	// URL is the server's chat endpoint: ws://host:port/ws or wss://.
	URL string
	// Fallbacks are more endpoints of the same cluster: after a
	// connection drops, the client tries the next one, then the next.
	Fallbacks []string

	// Nick is the nick a guest asks for (?nick=), kept across reconnects
	// (SetNick changes it). Signed-in users have their token's.
	Nick string
	// Room is the room the server joins the client to on connect
	// (?room=); "" is the server's default room.
	Room string

	// Token, when set, signs the client in: it is called for a token
	// (sent as Authorization: Bearer) before each connection, and again
	// RefreshBefore the token in force expires, whose answer is sent as
	// an auth request, so a connection outlives its tokens. A Token error
	// ends a reconnection attempt (the next retries).
	Token func(ctx context.Context) (string, error)
	// RefreshBefore is how long before its token expires the client asks
	// Token for a fresh one. Default 30 s (a third of the token's life if
	// that is shorter).
	RefreshBefore time.Duration

	// Header holds extra handshake headers (an Origin, for a server that
	// checks it).
	Header http.Header
	// HTTPClient dials; nil is http.DefaultClient.
	HTTPClient *http.Client

	// MinBackoff and MaxBackoff bound the wait before a reconnection: it
	// doubles from MinBackoff up to MaxBackoff, each wait drawn at random
	// in its upper half (jitter), and starts again from MinBackoff once a
	// connection is welcomed. Defaults 250 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration

	// MaxPending bounds the messages said and not yet stored (sent or
	// waiting for a connection): Say past it fails with ErrQueueFull.
	// Default 1000.
	MaxPending int
	// EventBuffer is the capacity of Events' channel. A full channel
	// stops the client reading from the server (which closes a client
	// that reads too slowly with 1008 slow consumer: it then reconnects
	// and resumes). Default 256.
	EventBuffer int
	// WriteTimeout bounds a frame's write. Default 10 s.
	WriteTimeout time.Duration

	// Logger logs reconnections; nil discards.
	Logger *slog.Logger
}

// withDefaults returns cfg with its zero fields set to their defaults,
// or the first field that is not valid.
func (cfg Config) withDefaults() (Config, error) {
	bad := func(field string, format string, a ...any) error {
		return cfgerr.New(field, "client: "+field+" "+format, a...)
	}
	for i, u := range append([]string{cfg.URL}, cfg.Fallbacks...) {
		field := "URL"
		if i > 0 {
			field = fmt.Sprintf("Fallbacks[%d]", i-1)
		}
		p, err := url.Parse(u)
		if err != nil {
			return cfg, bad(field, "%q: %w", u, err)
		}
		if p.Scheme != "ws" && p.Scheme != "wss" || p.Host == "" {
			return cfg, bad(field, "%q: want ws://host/path or wss://host/path", u)
		}
	}
	for _, d := range []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{
		{"MinBackoff", &cfg.MinBackoff, DefaultMinBackoff},
		{"MaxBackoff", &cfg.MaxBackoff, DefaultMaxBackoff},
		{"RefreshBefore", &cfg.RefreshBefore, DefaultRefreshBefore},
		{"WriteTimeout", &cfg.WriteTimeout, DefaultWriteTimeout},
	} {
		switch {
		case *d.v < 0:
			return cfg, bad(d.field, "%v: must not be negative", *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return cfg, bad("MaxBackoff", "%v: less than MinBackoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}
	for _, n := range []struct {
		field string
		v     *int
		def   int
	}{
		{"MaxPending", &cfg.MaxPending, DefaultMaxPending},
		{"EventBuffer", &cfg.EventBuffer, DefaultEventBuffer},
	} {
		switch {
		case *n.v < 0:
			return cfg, bad(n.field, "%d: must not be negative", *n.v)
		case *n.v == 0:
			*n.v = n.def
		}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}
