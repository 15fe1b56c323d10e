package loadtest

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Defaults applied to zero Config fields.
const (
	DefaultTarget         = "ws://localhost:1337/ws"
	DefaultClients        = 1000
	DefaultDialers        = 64
	DefaultConnectTimeout = 10 * time.Second
	DefaultHold           = 10 * time.Second
	DefaultSources        = "127.0.0.2-127.0.0.17"
	DefaultBurst          = 100
	DefaultRounds         = 5
	DefaultRoundTimeout   = 30 * time.Second
)

// Config configures a load-test run. The zero value is valid: zero fields
// take the defaults named beside them. Every run is bounded: it ends after
// TimeLimit whatever happens.
type Config struct {
	// Scenario is ScenarioHold (default) or ScenarioBurst.
	Scenario string

	// Burst is the number of messages client 0 sends per round in the burst
	// scenario; the server is expected to relay each to every client (as
	// the seed chat does). Default 100.
	Burst int

	// Rounds is the number of bursts. Default 5.
	Rounds int

	// RoundTimeout bounds one round: messages not delivered by then count
	// as missing. Default 30 s.
	RoundTimeout time.Duration

	// Targets are the WebSocket URLs to connect to (ws://host:port/path);
	// clients are spread over them round-robin. Only loopback hosts are
	// allowed. Default DefaultTarget.
	Targets []string

	// Clients is the number of connections to open. Default 1000.
	Clients int

	// Dialers is the number of connections being opened at once (TCP connect
	// and upgrade). Default 64.
	Dialers int

	// ConnectTimeout bounds one connection's TCP connect plus upgrade.
	// Default 10 s.
	ConnectTimeout time.Duration

	// Sources is the range of loopback source addresses connections are
	// bound to, round-robin ("127.0.0.2-127.0.0.17", or one address), so
	// that ephemeral ports never run out. Default DefaultSources.
	Sources string

	// Origin, if set, is sent as the Origin header.
	Origin string

	// Hold is how long the clients stay connected once all are dialed.
	// Default 10 s.
	Hold time.Duration

	// TimeLimit is a hard bound on the whole run. Default: Hold plus one
	// minute per 10,000 clients, plus Rounds x RoundTimeout for bursts, at
	// least two minutes.
	TimeLimit time.Duration

	// ServerPIDs are server processes whose resident memory is read from
	// /proc while the clients are held, to report the server's memory per
	// connection. Optional.
	ServerPIDs []int

	// Progress receives a progress line every second; nil for none.
	Progress io.Writer

	// Logger receives the run's logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.Scenario == "" {
		d.Scenario = ScenarioHold
	}
	if d.Burst == 0 {
		d.Burst = DefaultBurst
	}
	if d.Rounds == 0 {
		d.Rounds = DefaultRounds
	}
	if d.RoundTimeout == 0 {
		d.RoundTimeout = DefaultRoundTimeout
	}
	if len(d.Targets) == 0 {
		d.Targets = []string{DefaultTarget}
	}
	if d.Clients == 0 {
		d.Clients = DefaultClients
	}
	if d.Dialers == 0 {
		d.Dialers = DefaultDialers
	}
	if d.ConnectTimeout == 0 {
		d.ConnectTimeout = DefaultConnectTimeout
	}
	if d.Sources == "" {
		d.Sources = DefaultSources
	}
	if d.Hold == 0 {
		d.Hold = DefaultHold
	}
	if d.TimeLimit == 0 {
		d.TimeLimit = max(2*time.Minute, d.Hold+time.Duration(d.Clients/10000+1)*time.Minute)
		if d.Scenario == ScenarioBurst {
			d.TimeLimit += time.Duration(d.Rounds) * d.RoundTimeout
		}
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return d
}

// Validate reports the first invalid field, after defaults.
func (c *Config) Validate() error {
	d := c.withDefaults()
	for _, t := range d.Targets {
		if _, err := parseTarget(t); err != nil {
			return err
		}
	}
	if _, err := parseSources(d.Sources); err != nil {
		return err
	}
	switch {
	case d.Scenario != ScenarioHold && d.Scenario != ScenarioBurst:
		return fmt.Errorf("loadtest: Scenario %q: want %s or %s", d.Scenario, ScenarioHold, ScenarioBurst)
	case d.Burst < 0:
		return fmt.Errorf("loadtest: Burst (%d) must be positive", d.Burst)
	case d.Rounds < 0:
		return fmt.Errorf("loadtest: Rounds (%d) must be positive", d.Rounds)
	case d.RoundTimeout < 0:
		return fmt.Errorf("loadtest: RoundTimeout (%v) must be positive", d.RoundTimeout)
	case d.Clients < 0:
		return fmt.Errorf("loadtest: Clients (%d) must be positive", d.Clients)
	case d.Dialers < 0:
		return fmt.Errorf("loadtest: Dialers (%d) must be positive", d.Dialers)
	case d.ConnectTimeout < 0:
		return fmt.Errorf("loadtest: ConnectTimeout (%v) must be positive", d.ConnectTimeout)
	case d.Hold < 0:
		return fmt.Errorf("loadtest: Hold (%v) must be positive", d.Hold)
	case d.TimeLimit < 0:
		return fmt.Errorf("loadtest: TimeLimit (%v) must be positive", d.TimeLimit)
	case d.TimeLimit < d.Hold:
		return fmt.Errorf("loadtest: TimeLimit (%v) must be at least Hold (%v)", d.TimeLimit, d.Hold)
	}
	return nil
}

// isLoopback reports whether host names this machine's loopback interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// parseTarget checks a target URL: ws:// to a loopback host with a port.
func parseTarget(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("loadtest: target %q: %w", s, err)
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("loadtest: target %q: scheme must be ws", s)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("loadtest: target %q: needs a port", s)
	}
	if !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("loadtest: target %q: only loopback hosts (127.0.0.0/8, ::1, localhost) may be load-tested", s)
	}
	return u, nil
}

// parseSources parses "A" or "A-B" (loopback IPv4 addresses, A <= B).
func parseSources(s string) ([]net.IP, error) {
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		hi = lo
	}
	a, err1 := netip.ParseAddr(strings.TrimSpace(lo))
	b, err2 := netip.ParseAddr(strings.TrimSpace(hi))
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("loadtest: Sources %q: %w", s, err)
	}
	if !a.Is4() || !b.Is4() || !a.IsLoopback() || !b.IsLoopback() || b.Less(a) {
		return nil, fmt.Errorf("loadtest: Sources %q: want loopback IPv4 addresses A or A-B with A <= B", s)
	}
	var ips []net.IP
	for x := a; ; x = x.Next() {
		ips = append(ips, net.IP(x.AsSlice()))
		if x == b || len(ips) > 1<<16 {
			break
		}
	}
	return ips, nil
}
