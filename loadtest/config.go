package loadtest

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/cfgerr"
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
	DefaultRoomSize       = 100
	DefaultRate           = 1.0
	DefaultDuration       = 10 * time.Second
	DefaultChurnFraction  = 0.1
	DefaultChurnRate      = 100.0
)

// Config configures a load-test run. The zero value is valid: zero fields
// take the defaults named beside them. Every run is bounded: it ends after
// TimeLimit whatever happens.
type Config struct {
	// Scenario is ScenarioHold (default), ScenarioBurst, ScenarioChat,
	// ScenarioChurn or ScenarioFlood.
	Scenario string

	// RoomSize is the members per room in the chat scenarios: clients
	// 0..RoomSize-1 share room lt-0, and so on. Default 100.
	RoomSize int

	// Rate is the messages per second each chat client says. Default 1.
	Rate float64

	// Duration is how long the chat scenarios send. Default 10 s.
	Duration time.Duration

	// ChurnFraction of the clients (churn scenario) take no part in the chat
	// but are dropped and redialed, ChurnRate of them per second. Defaults
	// 0.1 and 100.
	ChurnFraction float64
	ChurnRate     float64

	// Reconnect: in the chat scenarios, a client whose connection the
	// server closes or drops dials the next target (then the others, until
	// the run ends) and rejoins its room from the last sequence number it
	// saw, as the chat page does: nothing it missed meanwhile counts as
	// missing if the server replays it. Reconnections are counted and
	// timed; only a client that never comes back counts as lost.
	Reconnect bool

	// Offset and TotalClients place this process's clients among all the
	// run's (a worker's share); defaults 0 and Clients.
	Offset       int
	TotalClients int

	// MaxP99 and MaxErrors are the run's thresholds: Result.Passed is false
	// if end-to-end p99 latency exceeds MaxP99 (0: no limit) or if failed
	// connections, connections lost, missing and duplicated messages add
	// up to more than MaxErrors (default 0; -1: no limit).
	MaxP99    time.Duration
	MaxErrors int

	// Workers is the number of processes to run the clients in; 0 means
	// ceil(Clients / PerWorker). PerWorker defaults to DefaultPerWorker
	// (17,000: one process holds at most about 19,900 sockets).
	Workers   int
	PerWorker int

	// WorkerCommand starts a worker process (it must call RunWorker);
	// default: this program with the argument "loadtest-worker".
	// WorkerEnv is added to the workers' environment.
	WorkerCommand []string
	WorkerEnv     []string

	// MetricsURLs are servers' /metrics, scraped before and after the run
	// for their resident memory and CPU time. Loopback only.
	MetricsURLs []string

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

	// Ramp caps new connections per second (over all workers); 0 means as
	// fast as the dialers go.
	Ramp float64

	// ConnectTimeout bounds one connection's TCP connect plus upgrade.
	// Default 10 s.
	ConnectTimeout time.Duration

	// Sources is the loopback source addresses connections are bound to,
	// round-robin: a comma-separated list of addresses and ranges
	// ("127.0.0.2-127.0.0.17", "127.1.0.2,127.2.0.2"), so that ephemeral
	// ports never run out. Default DefaultSources.
	Sources string

	// Origin, if set, is sent as the Origin header.
	Origin string

	// TLSCAFile is a PEM file of the certificates that wss:// targets are
	// verified against (default: the system's); TLSInsecure skips the
	// verification instead (loopback test servers with a self-signed
	// certificate).
	TLSCAFile   string
	TLSInsecure bool

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

	// IdleSockets is the siege scenario's TCP connections that never send
	// their upgrade, beside its Clients idle WebSocket clients. Default 0.
	IdleSockets int

	// Flooders is the number of hostile clients of the flood scenario: each
	// sends FloodKind requests as fast as its socket takes them, and comes
	// back when the server closes it. Default 2.
	Flooders int

	// FloodKind is what flooders send: say, typing, history, ping or mixed
	// (each of those in turn). Default mixed.
	FloodKind string

	// FloodSize is the text of a flooder's say or typing request, in bytes.
	// Default 30,000.
	FloodSize int

	// Compression offers permessage-deflate (RFC 7692, asking for no
	// context takeover): where the server agrees, its compressed messages
	// are inflated here; the clients' own messages go uncompressed (the
	// extension allows it per message). Result.WireBytesIn tells the
	// bytes on the wire.
	Compression bool

	// TokenSecretFile, if set, holds an HMAC secret (HS256): each client
	// connects with a token signed before the dialing starts (as a client
	// gets one from its backend), for user "lt-<n>" (n its index in the
	// run), valid for TokenTTL, with audience TokenAudience if set, as
	// "Authorization: Bearer". Servers started with --jwt-secret on the
	// same file admit them as users.
	TokenSecretFile string
	TokenAudience   string
	// TokenTTL is how long the tokens are valid. Default: TimeLimit.
	TokenTTL time.Duration

	// Progress receives a progress line every second; nil for none.
	Progress io.Writer `json:"-"`

	// Logger receives the run's logs. Default slog.Default().
	Logger *slog.Logger `json:"-"`
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.Scenario == "" {
		d.Scenario = ScenarioHold
	}
	if d.RoomSize == 0 {
		d.RoomSize = DefaultRoomSize
	}
	if d.Rate == 0 {
		d.Rate = DefaultRate
	}
	if d.Duration == 0 {
		d.Duration = DefaultDuration
	}
	if d.ChurnFraction == 0 {
		d.ChurnFraction = DefaultChurnFraction
	}
	if d.ChurnRate == 0 {
		d.ChurnRate = DefaultChurnRate
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
	if d.PerWorker == 0 {
		d.PerWorker = DefaultPerWorker
	}
	if d.TotalClients == 0 {
		d.TotalClients = d.Offset + d.Clients
	}
	if d.TimeLimit == 0 {
		d.TimeLimit = max(2*time.Minute, d.Hold+time.Duration(d.Clients/10000+1)*time.Minute)
		switch d.Scenario {
		case ScenarioBurst:
			d.TimeLimit += time.Duration(d.Rounds) * d.RoundTimeout
		case ScenarioChat, ScenarioChurn, ScenarioFlood, ScenarioSiege:
			d.TimeLimit += d.Duration + time.Minute
		}
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Flooders == 0 {
		d.Flooders = DefaultFlooders
	}
	if d.FloodKind == "" {
		d.FloodKind = FloodMixed
	}
	if d.FloodSize == 0 {
		d.FloodSize = DefaultFloodSize
	}
	return d
}

// Validate reports the first invalid field, after defaults.
func (c *Config) Validate() error {
	d := c.withDefaults()
	for _, t := range d.Targets {
		if _, err := parseTarget(t); err != nil {
			return cfgerr.New("Targets", "%w", err)
		}
	}
	if _, err := parseSources(d.Sources); err != nil {
		return cfgerr.New("Sources", "%w", err)
	}
	for _, m := range d.MetricsURLs {
		u, err := url.Parse(m)
		if err != nil || (u.Scheme != "http") || !isLoopback(u.Hostname()) {
			return cfgerr.New("MetricsURLs", "loadtest: metrics URL %q: want http:// on a loopback host", m)
		}
	}
	switch {
	case d.Scenario != ScenarioHold && d.Scenario != ScenarioBurst && d.Scenario != ScenarioSiege && !isChat(d.Scenario):
		return cfgerr.New("Scenario", "loadtest: Scenario %q: want hold, burst, chat, churn, flood or siege", d.Scenario)
	case d.IdleSockets < 0 || d.IdleSockets > 0 && d.Scenario != ScenarioSiege:
		return cfgerr.New("IdleSockets", "loadtest: IdleSockets (%d): a number of sockets, for the siege scenario only", d.IdleSockets)
	case d.Scenario == ScenarioSiege && d.Clients+d.IdleSockets > maxSiegeSockets:
		return cfgerr.New("Clients", "loadtest: the siege scenario runs in one process: Clients + IdleSockets (%d) must be at most %d", d.Clients+d.IdleSockets, maxSiegeSockets)
	case d.Scenario == ScenarioFlood && d.Clients > d.PerWorker:
		return cfgerr.New("Clients", "loadtest: the flood scenario runs in one process: Clients (%d) must be at most PerWorker (%d)", d.Clients, d.PerWorker)
	case d.Flooders < 0 || d.Flooders > maxFlooders:
		return cfgerr.New("Flooders", "loadtest: Flooders (%d) must be between 1 and %d", d.Flooders, maxFlooders)
	case d.FloodSize < 0 || d.FloodSize > 16<<20:
		return cfgerr.New("FloodSize", "loadtest: FloodSize (%d) must be between 1 and 16 MiB", d.FloodSize)
	case !slices.Contains(floodKinds, d.FloodKind):
		return cfgerr.New("FloodKind", "loadtest: FloodKind %q: want one of %s", d.FloodKind, strings.Join(floodKinds, ", "))
	case d.RoomSize < 1:
		return cfgerr.New("RoomSize", "loadtest: RoomSize (%d) must be positive", d.RoomSize)
	case d.Rate < 0:
		return cfgerr.New("Rate", "loadtest: Rate (%v) must be positive", d.Rate)
	case d.Duration < 0:
		return cfgerr.New("Duration", "loadtest: Duration (%v) must be positive", d.Duration)
	case d.ChurnFraction < 0 || d.ChurnFraction >= 1:
		return cfgerr.New("ChurnFraction", "loadtest: ChurnFraction (%v) must be in (0, 1)", d.ChurnFraction)
	case d.ChurnRate < 0:
		return cfgerr.New("ChurnRate", "loadtest: ChurnRate (%v) must be positive", d.ChurnRate)
	case d.Offset < 0 || d.TotalClients < d.Offset+d.Clients:
		return cfgerr.New("Offset", "loadtest: Offset (%d) + Clients (%d) exceed TotalClients (%d)", d.Offset, d.Clients, d.TotalClients)
	case d.Ramp < 0:
		return cfgerr.New("Ramp", "loadtest: Ramp (%v) must be positive", d.Ramp)
	case d.Workers < 0 || d.PerWorker < 0:
		return cfgerr.New("Workers", "loadtest: Workers (%d) and PerWorker (%d) must be positive", d.Workers, d.PerWorker)
	case d.MaxErrors < -1:
		return cfgerr.New("MaxErrors", "loadtest: MaxErrors (%d) must be positive, or -1 for no limit", d.MaxErrors)
	case d.Burst < 0:
		return cfgerr.New("Burst", "loadtest: Burst (%d) must be positive", d.Burst)
	case d.Rounds < 0:
		return cfgerr.New("Rounds", "loadtest: Rounds (%d) must be positive", d.Rounds)
	case d.RoundTimeout < 0:
		return cfgerr.New("RoundTimeout", "loadtest: RoundTimeout (%v) must be positive", d.RoundTimeout)
	case d.Clients < 0:
		return cfgerr.New("Clients", "loadtest: Clients (%d) must be positive", d.Clients)
	case d.Dialers < 0:
		return cfgerr.New("Dialers", "loadtest: Dialers (%d) must be positive", d.Dialers)
	case d.ConnectTimeout < 0:
		return cfgerr.New("ConnectTimeout", "loadtest: ConnectTimeout (%v) must be positive", d.ConnectTimeout)
	case d.Hold < 0:
		return cfgerr.New("Hold", "loadtest: Hold (%v) must be positive", d.Hold)
	case d.TimeLimit < 0:
		return cfgerr.New("TimeLimit", "loadtest: TimeLimit (%v) must be positive", d.TimeLimit)
	case d.TimeLimit < d.Hold:
		return cfgerr.New("TimeLimit", "loadtest: TimeLimit (%v) must be at least Hold (%v)", d.TimeLimit, d.Hold)
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
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return nil, fmt.Errorf("loadtest: target %q: scheme must be ws or wss", s)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("loadtest: target %q: needs a port", s)
	}
	if !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("loadtest: target %q: only loopback hosts (127.0.0.0/8, ::1, localhost) may be load-tested", s)
	}
	return u, nil
}

// parseSources parses a comma-separated list of "A" or "A-B" (loopback
// IPv4 addresses, A <= B): "127.0.0.2-127.0.0.17", "127.1.0.2,127.2.0.2".
func parseSources(s string) ([]net.IP, error) {
	var ips []net.IP
	for _, item := range strings.Split(s, ",") {
		r, err := parseSourceRange(item)
		if err != nil {
			return nil, err
		}
		if ips = append(ips, r...); len(ips) > 1<<16 {
			return nil, fmt.Errorf("loadtest: Sources %q: more than %d addresses", s, 1<<16)
		}
	}
	return ips, nil
}

// parseSourceRange parses "A" or "A-B".
func parseSourceRange(s string) ([]net.IP, error) {
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

// ConfigError is the error Validate returns: errors.As finds it, its Field
// names the field at fault, and errors.Is(err, ErrInvalidConfig) holds.
type ConfigError = cfgerr.Error

// ErrInvalidConfig is what every error of Validate Is.
var ErrInvalidConfig = cfgerr.ErrInvalid
