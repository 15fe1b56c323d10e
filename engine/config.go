package engine

import (
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/cfgerr"
)

// Defaults applied to zero Config fields.
const (
	DefaultAddr                  = "localhost:1337"
	DefaultMaxConnections        = 19000 // fits under a 20,000 open-file limit
	DefaultMaxMessageSize        = 64 << 10
	MaxMessageSizeLimit          = 1 << 30 // the largest MaxMessageSize accepted
	DefaultHandshakeTimeout      = 10 * time.Second
	DefaultHeartbeatInterval     = 30 * time.Second
	DefaultHeartbeatTimeout      = 10 * time.Second
	DefaultCloseTimeout          = 3 * time.Second
	DefaultSocketReadBuffer      = 256 << 10
	DefaultMaxConnectionsPerAddr = 256
	DefaultConnectRatePerAddr    = 20
	DefaultMaxPingsPerSecond     = 10
	DefaultMaxPendingInput       = 256 << 10
	DefaultMaxPendingInputTotal  = 64 << 20
	DefaultSendQueueSoftLimit    = 256 << 10
	DefaultSendQueueHardLimit    = 1 << 20
	DefaultSlowConsumerTimeout   = 10 * time.Second
	DefaultFlushWindow           = time.Millisecond
	DefaultCompressionLevel      = 1   // flate.BestSpeed
	DefaultCompressionThreshold  = 128 // bytes
)

// Config configures a Server. The zero value is valid: every zero field
// takes the default named beside it. Where a field says so, -1 turns the
// feature off. New works on a copy; the caller's Config is never modified.
type Config struct {
	// Addr is the TCP address to listen on. Default DefaultAddr
	// ("localhost:1337"). Port 0 picks a free port; see Server.Addr.
	Addr string

	// ReusePort sets SO_REUSEPORT on the listening socket, so several
	// processes (a cluster's nodes) can listen on one Addr and the kernel
	// spreads new connections over them; when one stops, its clients
	// reconnect to the others at the same address. Default off.
	ReusePort bool

	// Logger receives the server's structured logs. Default slog.Default().
	Logger *slog.Logger

	// Pollers is the number of epoll goroutines doing socket I/O. Default
	// GOMAXPROCS.
	Pollers int

	// Writers is the number of writer shards: goroutines that frame nothing,
	// but coalesce each client's pending frames into one write. A client
	// belongs to one shard. Default GOMAXPROCS.
	Writers int

	// MaxConnections caps the open WebSocket clients. A client beyond it
	// takes the slot of the oldest guest that never sent a message (closed
	// with 1013), or is refused with 503 if there is none. Default
	// DefaultMaxConnections (19,000); -1 means no limit (the process's
	// open-file limit still applies).
	MaxConnections int

	// ReservedConnections of MaxConnections are kept for privileged
	// clients (whose handshake data is Privileged: signed-in users): a
	// guest finds the server full once MaxConnections-ReservedConnections
	// are taken. Default a tenth of MaxConnections; -1: none.
	ReservedConnections int

	// KeepSilentGuests turns off the making of room: a client that finds
	// the server full is refused with 503 even when guests that never
	// sent a message hold slots. Default false: the oldest of those is
	// closed with 1013 to let the new client in.
	KeepSilentGuests bool

	// MaxMessageSize caps a received message, in bytes, after reassembly of
	// fragments. A larger one closes the client with 1009. Default
	// DefaultMaxMessageSize (64 KiB).
	MaxMessageSize int

	// HandshakeTimeout is how long a connection may stay open without
	// completing its upgrade; it is also the idle timeout of plain HTTP
	// keep-alive connections. Default 10 s.
	HandshakeTimeout time.Duration

	// HeartbeatInterval is how long a client may stay silent before the
	// server pings it. Any received frame counts as activity, so busy
	// clients are never pinged. Default 30 s; -1 disables heartbeats (idle
	// clients are then never closed).
	HeartbeatInterval time.Duration

	// HeartbeatTimeout is how long a pinged client has to answer (with any
	// frame) before it is closed with 1008 "heartbeat timeout". Default 10 s.
	HeartbeatTimeout time.Duration

	// CloseTimeout bounds the close handshake: after the server sends a close
	// frame it waits this long for the peer's, then drops the connection.
	// Default 3 s.
	CloseTimeout time.Duration

	// SendQueueSoftLimit: while more than this many bytes wait for a client's
	// socket, new messages sent to many (broadcasts, multicasts, groups)
	// skip it (and are counted); a Send to it alone still queues, up to
	// SendQueueHardLimit. Default 256 KiB.
	SendQueueSoftLimit int

	// SendQueueHardLimit: a client with more than this many bytes waiting is
	// closed with 1008 "slow consumer". Default 1 MiB. nbio's own per-client
	// write buffer is capped at twice this, as a backstop.
	SendQueueHardLimit int

	// SlowConsumerTimeout: a client that has missed a message (its queue was
	// past SendQueueSoftLimit) and has not drained its queue this long after
	// is closed with 1008 "slow consumer". Default 10 s.
	SlowConsumerTimeout time.Duration

	// FlushWindow is the shortest time between a writer's busy round (one
	// that made more than one write) and its next: work posted within a
	// window of it waits for the window's end and joins one batch; work
	// posted later goes out at once, and so does the next round after a
	// round that wrote once (a lone reply: request/response exchanges pay
	// no window). Default DefaultFlushWindow (1 ms); -1 turns it off (pure
	// group commit, where batches grow only while a round is slower than
	// the traffic).
	//
	// Measured (BenchmarkTrickle: 100 recipients, server and clients on
	// 2 cores): at 4,000 messages/s, 1 ms cut CPU per delivery from 4.1 to
	// 2.4 us and p99 latency from 15-16 ms to 2.8-3.0 ms, p50 unchanged
	// (about 1.3 ms); at 500 messages/s it changed nothing measurable. A
	// 5 ms window saves more CPU (1.0-1.2 us) but adds about 3 ms to every
	// message under load.
	FlushWindow time.Duration

	// Compression offers permessage-deflate (RFC 7692) to clients that ask
	// for it. The server compresses each message once, without context
	// takeover, and every recipient that negotiated the extension shares
	// the compressed frame. Default off.
	Compression bool

	// CompressionLevel is flate's level, 1 (fastest) to 9. Default 1.
	CompressionLevel int

	// CompressionThreshold: messages shorter than this many bytes go
	// uncompressed (deflate's header and Huffman tables outweigh what it
	// saves on them). Default 128; -1 compresses every message.
	CompressionThreshold int

	// MaxInflatedBytesPerSecond caps the bytes a client's compressed
	// messages may inflate to per second (bursts of a second's worth).
	// It is counted before the work: a message is inflated only as far as
	// the client's budget goes, and one that would go past it closes the
	// client with 1008. Without it, 80-byte messages inflating to 65,000
	// bytes each made the server inflate 800 times what it read before
	// any later limit (the chat's message rate) could refuse them.
	// Default 4 x MaxMessageSize (256 KiB/s); at least MaxMessageSize; -1:
	// no limit.
	MaxInflatedBytesPerSecond float64

	// CompressionContextTakeover lets clients compress each message with
	// the ones before as dictionary (better ratios on repetitive traffic),
	// at 32 KiB of heap per such client once its window is full
	// (BenchmarkTakeoverWindow; the process's RSS adds the garbage
	// collector's headroom, up to as much again at GOGC=100). Default
	// off: the server answers client_no_context_takeover.
	CompressionContextTakeover bool

	// SocketWriteBuffer sets each client socket's kernel send buffer
	// (SO_SNDBUF), in bytes. 0 keeps the kernel's autotuning, which lets a
	// client that stops reading hold up to net.ipv4.tcp_wmem's maximum (4 MiB
	// on Linux by default) in the kernel before the send-queue limits see
	// anything. Set it to bound kernel memory per slow client.
	SocketWriteBuffer int

	// SocketReadBuffer sets each client socket's kernel receive buffer
	// (SO_RCVBUF), in bytes (the kernel doubles it for its bookkeeping).
	// It bounds what a client can push into the kernel while the server
	// is not reading it (MaxPendingInput), and the kernel memory of a
	// client that sends and sends. It must hold a few segments: a paused
	// socket whose receive window is under one segment reads as readable
	// (and loopback's segments are 64 KiB). Default 256 KiB; -1 keeps the
	// kernel's autotuning (up to net.ipv4.tcp_rmem's maximum, 6 MiB or
	// more).
	SocketReadBuffer int

	// MaxConnectionsPerAddr caps the open TCP connections from one address
	// (an IPv4 address, or an IPv6 /56), counted from accept: WebSocket
	// clients and connections that have not upgraded alike. One beyond it
	// gets 429 with Retry-After and is closed. Default 256 (room for a
	// small office behind one NAT); raise it for load tests from a few
	// addresses; -1: no limit.
	MaxConnectionsPerAddr int

	// MaxConnectionsPerNetwork caps the open TCP connections from one
	// network (an IPv4 /24, an IPv6 /48), counted like
	// MaxConnectionsPerAddr, on top of it: an attacker's addresses in one
	// network share it. Default 4 x MaxConnectionsPerAddr (1,024); -1: no
	// limit.
	MaxConnectionsPerNetwork int

	// ConnectRatePerAddr caps the new TCP connections per second from one
	// address (bursts of up to a second's worth, at least one: 0.5 admits
	// one connection every 2 s); beyond it, 429. A client
	// that reconnects to get a fresh chat rate bucket meets this one.
	// Default 20; -1: no limit.
	ConnectRatePerAddr float64

	// MaxPendingInput bounds the bytes of a client's messages that were
	// received but not yet handled by the application: past it the server
	// stops reading the client's socket (TCP pushes back on the sender)
	// until its handler has caught up to half of it. An endpoint whose
	// message limit is larger uses that instead. Default 256 KiB.
	MaxPendingInput int

	// MaxPendingInputTotal bounds the same over all clients: past it, every
	// client that has a message waiting is paused the same way, until its
	// own backlog is handled. Default 64 MiB; -1: no total bound.
	MaxPendingInputTotal int

	// MaxPingsPerSecond caps the pings a client may send per second (bursts
	// of a second's worth): each costs a pong, and a client needs one every
	// few seconds at most. Beyond it the client is closed with 1008.
	// Default 10; -1: no limit.
	MaxPingsPerSecond float64

	// MaxMessagesPerSecond caps the frames a client may send per second,
	// control frames included (a ping flood counts); beyond it the client
	// is closed with 1008. MaxBytesPerSecond does the same for bytes.
	// Both allow bursts of one second's worth. Default -1: no limit.
	MaxMessagesPerSecond float64
	MaxBytesPerSecond    float64

	// TLSCertFile and TLSKeyFile, both set, make the server speak HTTPS and
	// wss:// only (PEM files; TLS 1.2 and later, through llib's non-blocking
	// TLS). Default: plain HTTP and ws://.
	TLSCertFile string
	TLSKeyFile  string

	// AllowedOrigins lists the origins (scheme://host[:port]) whose
	// browsers may open WebSockets; scheme, host and port must all match
	// (case-insensitively, a missing port being the scheme's default).
	// Empty means the server's own origin only: the Origin's scheme must be
	// the server's (https with TLS, http without) and its host and port the
	// Host header's, that host being an IP address, localhost (or a name
	// under it) or Addr's host name: any other name could be an attacker's
	// pointed at the server (DNS rebinding). A server reached by another
	// name, or behind a proxy that terminates TLS, lists its public origin
	// here. Two Origin headers are refused. "*" allows every origin, which lets any web page act as
	// its visitors (cross-site WebSocket hijacking): avoid it. Requests
	// without an Origin header (non-browser clients) are always allowed.
	AllowedOrigins []string

	// Root is the document root served for paths that match no route, with
	// index.html for directories. Nil serves nothing (404).
	Root fs.FS
}

func (c *Config) withDefaults() Config {
	d := *c
	d.AllowedOrigins = append([]string(nil), c.AllowedOrigins...)
	if d.Addr == "" {
		d.Addr = DefaultAddr
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Pollers == 0 {
		d.Pollers = runtime.GOMAXPROCS(0)
	}
	if d.Writers == 0 {
		d.Writers = runtime.GOMAXPROCS(0)
	}
	if d.MaxConnections == 0 {
		d.MaxConnections = DefaultMaxConnections
	}
	if d.MaxMessageSize == 0 {
		d.MaxMessageSize = DefaultMaxMessageSize
	}
	if d.HandshakeTimeout == 0 {
		d.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if d.HeartbeatInterval == 0 {
		d.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if d.HeartbeatTimeout == 0 {
		d.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if d.CloseTimeout == 0 {
		d.CloseTimeout = DefaultCloseTimeout
	}
	if d.SocketReadBuffer == 0 {
		d.SocketReadBuffer = DefaultSocketReadBuffer
	}
	if d.MaxPendingInput == 0 {
		d.MaxPendingInput = DefaultMaxPendingInput
	}
	if d.MaxPendingInputTotal == 0 {
		d.MaxPendingInputTotal = DefaultMaxPendingInputTotal
	}
	if d.SendQueueSoftLimit == 0 {
		d.SendQueueSoftLimit = DefaultSendQueueSoftLimit
	}
	if d.SendQueueHardLimit == 0 {
		d.SendQueueHardLimit = DefaultSendQueueHardLimit
	}
	if d.SlowConsumerTimeout == 0 {
		d.SlowConsumerTimeout = DefaultSlowConsumerTimeout
	}
	if d.FlushWindow == 0 {
		d.FlushWindow = DefaultFlushWindow
	}
	if d.CompressionLevel == 0 {
		d.CompressionLevel = DefaultCompressionLevel
	}
	switch d.CompressionThreshold {
	case 0:
		d.CompressionThreshold = DefaultCompressionThreshold
	case -1:
		d.CompressionThreshold = 0
	}
	for _, f := range []*float64{&d.MaxMessagesPerSecond, &d.MaxBytesPerSecond} {
		if *f == 0 {
			*f = -1
		}
	}
	if d.MaxInflatedBytesPerSecond == 0 {
		d.MaxInflatedBytesPerSecond = 4 * float64(d.MaxMessageSize)
	}
	if d.MaxPingsPerSecond == 0 {
		d.MaxPingsPerSecond = DefaultMaxPingsPerSecond
	}
	if d.ConnectRatePerAddr == 0 {
		d.ConnectRatePerAddr = DefaultConnectRatePerAddr
	}
	if d.MaxConnectionsPerAddr == 0 {
		d.MaxConnectionsPerAddr = DefaultMaxConnectionsPerAddr
	}
	if d.MaxConnectionsPerNetwork == 0 {
		d.MaxConnectionsPerNetwork = -1
		if d.MaxConnectionsPerAddr > 0 {
			d.MaxConnectionsPerNetwork = 4 * d.MaxConnectionsPerAddr
		}
	}
	switch {
	case d.ReservedConnections == -1 || d.MaxConnections < 0:
		d.ReservedConnections = 0
	case d.ReservedConnections == 0:
		d.ReservedConnections = d.MaxConnections / 10
	}
	return d
}

// Validate reports the first invalid field of c, after defaults are applied,
// naming the field, its value and the rule it breaks.
func (c *Config) Validate() error {
	d := c.withDefaults()
	if _, _, err := net.SplitHostPort(d.Addr); err != nil {
		return cfgerr.New("Addr", "engine: Addr %q is not host:port: %w", d.Addr, err)
	}
	positive := []struct {
		name string
		v    int
	}{
		{"Pollers", d.Pollers},
		{"Writers", d.Writers},
		{"MaxMessageSize", d.MaxMessageSize},
		{"MaxPendingInput", d.MaxPendingInput},
		{"SendQueueSoftLimit", d.SendQueueSoftLimit},
		{"SendQueueHardLimit", d.SendQueueHardLimit},
		{"SocketWriteBuffer", d.SocketWriteBuffer},
	}
	for _, f := range positive {
		if f.v < 0 {
			return cfgerr.New(f.name, "engine: %s (%d) must be positive", f.name, f.v)
		}
	}
	if d.MaxMessageSize > MaxMessageSizeLimit {
		return cfgerr.New("MaxMessageSize", "engine: MaxMessageSize (%d) must be at most %d", d.MaxMessageSize, MaxMessageSizeLimit)
	}
	if d.MaxConnections < -1 {
		return cfgerr.New("MaxConnections", "engine: MaxConnections (%d) must be positive, or -1 for no limit", d.MaxConnections)
	}
	durations := []struct {
		name string
		v    time.Duration
	}{
		{"HandshakeTimeout", d.HandshakeTimeout},
		{"HeartbeatTimeout", d.HeartbeatTimeout},
		{"CloseTimeout", d.CloseTimeout},
		{"SlowConsumerTimeout", d.SlowConsumerTimeout},
	}
	for _, f := range durations {
		if f.v < 0 {
			return cfgerr.New(f.name, "engine: %s (%v) must be positive", f.name, f.v)
		}
	}
	if (d.TLSCertFile == "") != (d.TLSKeyFile == "") {
		return cfgerr.New("TLSCertFile", "engine: TLSCertFile (%q) and TLSKeyFile (%q) must be set together", d.TLSCertFile, d.TLSKeyFile)
	}
	if d.SocketReadBuffer < -1 {
		return cfgerr.New("SocketReadBuffer", "engine: SocketReadBuffer (%d) must be positive, or -1 for the kernel's autotuning", d.SocketReadBuffer)
	}
	if d.MaxPendingInputTotal < -1 {
		return cfgerr.New("MaxPendingInputTotal", "engine: MaxPendingInputTotal (%d) must be positive, or -1 for no limit", d.MaxPendingInputTotal)
	}
	if d.MaxPendingInputTotal > 0 && d.MaxPendingInputTotal < d.MaxPendingInput {
		return cfgerr.New("MaxPendingInputTotal", "engine: MaxPendingInputTotal (%d) must be at least MaxPendingInput (%d)", d.MaxPendingInputTotal, d.MaxPendingInput)
	}
	if d.MaxConnectionsPerNetwork < -1 || d.MaxConnectionsPerNetwork > 0 && d.MaxConnectionsPerAddr > 0 && d.MaxConnectionsPerNetwork < d.MaxConnectionsPerAddr {
		return cfgerr.New("MaxConnectionsPerNetwork", "engine: MaxConnectionsPerNetwork (%d) must be at least MaxConnectionsPerAddr (%d), or -1 for no limit", d.MaxConnectionsPerNetwork, d.MaxConnectionsPerAddr)
	}
	if d.ReservedConnections < 0 || d.MaxConnections > 0 && d.ReservedConnections >= d.MaxConnections {
		return cfgerr.New("ReservedConnections", "engine: ReservedConnections (%d) must be under MaxConnections (%d), or -1 for none", d.ReservedConnections, d.MaxConnections)
	}
	if d.MaxConnectionsPerAddr < -1 {
		return cfgerr.New("MaxConnectionsPerAddr", "engine: MaxConnectionsPerAddr (%d) must be positive, or -1 for no limit", d.MaxConnectionsPerAddr)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"ConnectRatePerAddr", d.ConnectRatePerAddr}, {"MaxPingsPerSecond", d.MaxPingsPerSecond},
		{"MaxMessagesPerSecond", d.MaxMessagesPerSecond}, {"MaxBytesPerSecond", d.MaxBytesPerSecond},
		{"MaxInflatedBytesPerSecond", d.MaxInflatedBytesPerSecond}} {
		if f.v < 0 && f.v != -1 {
			return cfgerr.New(f.name, "engine: %s (%v) must be positive, or -1 for no limit", f.name, f.v)
		}
	}
	if d.MaxMessagesPerSecond > 0 && d.MaxMessagesPerSecond < 1 {
		return cfgerr.New("MaxMessagesPerSecond", "engine: MaxMessagesPerSecond (%v) must be at least 1", d.MaxMessagesPerSecond)
	}
	if d.MaxInflatedBytesPerSecond > 0 && d.MaxInflatedBytesPerSecond < float64(d.MaxMessageSize) {
		return cfgerr.New("MaxInflatedBytesPerSecond", "engine: MaxInflatedBytesPerSecond (%v) must be at least MaxMessageSize (%d)", d.MaxInflatedBytesPerSecond, d.MaxMessageSize)
	}
	if d.MaxBytesPerSecond > 0 && d.MaxBytesPerSecond < float64(d.MaxMessageSize) {
		return cfgerr.New("MaxBytesPerSecond", "engine: MaxBytesPerSecond (%v) must be at least MaxMessageSize (%d)", d.MaxBytesPerSecond, d.MaxMessageSize)
	}
	if d.CompressionLevel < 1 || d.CompressionLevel > 9 {
		return cfgerr.New("CompressionLevel", "engine: CompressionLevel (%d) must be 1 to 9", d.CompressionLevel)
	}
	if d.CompressionThreshold < 0 {
		return cfgerr.New("CompressionThreshold", "engine: CompressionThreshold (%d) must be positive, or -1 to compress every message", c.CompressionThreshold)
	}
	if d.FlushWindow < 0 && d.FlushWindow != -1 {
		return cfgerr.New("FlushWindow", "engine: FlushWindow (%v) must be positive, or -1 to disable", d.FlushWindow)
	}
	if d.HeartbeatInterval < 0 && d.HeartbeatInterval != -1 {
		return cfgerr.New("HeartbeatInterval", "engine: HeartbeatInterval (%v) must be positive, or -1 to disable", d.HeartbeatInterval)
	}
	if d.HeartbeatInterval > 0 && d.HeartbeatInterval < time.Second {
		return cfgerr.New("HeartbeatInterval", "engine: HeartbeatInterval (%v) must be at least 1s", d.HeartbeatInterval)
	}
	if d.SendQueueSoftLimit > d.SendQueueHardLimit {
		return cfgerr.New("SendQueueSoftLimit", "engine: SendQueueSoftLimit (%d) must not exceed SendQueueHardLimit (%d)",
			d.SendQueueSoftLimit, d.SendQueueHardLimit)
	}
	for _, o := range d.AllowedOrigins {
		if _, ok := canonicalOrigin(o); !ok && o != "*" {
			return cfgerr.New("AllowedOrigins", "engine: AllowedOrigins entry %q is not an origin like https://host[:port]", o)
		}
	}
	return nil
}

// canonicalOrigin returns origin o (scheme://host[:port]) as
// "scheme://host:port", lower-cased, with the scheme's default port made
// explicit, so that https://Example.com/ and https://example.com:443 are
// the same origin and http://example.com is not. It reports false for
// anything else: another scheme, a path, a query, user info, "null".
func canonicalOrigin(o string) (string, bool) {
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	hostPort, ok := canonicalHost(u.Host, scheme)
	return scheme + "://" + hostPort, ok
}

// canonicalHost returns host[:port] as "host:port", lower-cased, with
// scheme's default port when none is given; false for a scheme other than
// http and https, or a bad port.
func canonicalHost(host, scheme string) (string, bool) {
	var port string
	switch scheme {
	case "http":
		port = "80"
	case "https":
		port = "443"
	default:
		return "", false
	}
	u := url.URL{Host: host}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return "", false
		}
		port = p
	} else if strings.HasSuffix(host, ":") {
		return "", false
	}
	name := strings.ToLower(u.Hostname())
	if name == "" {
		return "", false
	}
	return net.JoinHostPort(name, port), true
}

// ConfigError is the error Validate returns: errors.As finds it, its Field
// names the field at fault, and errors.Is(err, ErrInvalidConfig) holds.
type ConfigError = cfgerr.Error

// ErrInvalidConfig is what every error of Validate Is.
var ErrInvalidConfig = cfgerr.ErrInvalid
