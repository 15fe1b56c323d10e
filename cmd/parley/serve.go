package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lesismal/nbio/logging"
	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/auth"
	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/chat/natsbroker"
	parleyjs "github.com/parleyhq/parley/clients/js"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/memtrim"
	"github.com/parleyhq/parley/metrics"
	"github.com/parleyhq/parley/notify"
	"github.com/parleyhq/parley/static"
)

// serveConfig is what `parley serve` runs: the engine's configuration plus
// the command's own settings.
type serveConfig struct {
	Engine          engine.Config
	Chat            chat.Config
	ShutdownTimeout time.Duration
	MetricsListen   string // empty: /metrics on the main listener
	Pprof           bool   // /debug/pprof/ on the metrics listener
	EchoPath        string // empty: no echo endpoint
	LogLevel        slog.Level
	LogFormat       string
	// MemoryTrim returns the heap's unused memory to the system once the
	// process is quiet (Quiet -1: never).
	MemoryTrim memtrim.Config

	// A cluster: the broker's settings (URL empty: alone, in memory) and
	// an embedded NATS server's address (empty: none).
	NATS         natsbroker.Config
	NATSEmbedded string
	// NATSMaxStore is an embedded NATS server's JetStream store limit
	// (natsbroker.ServerConfig.MaxStore).
	NATSMaxStore int64
	// Durable history: the directory of a NATS store (alone: an embedded
	// server in this process; with NATSEmbedded: its store) and the rooms'
	// storage, memory or file ("" until parsed: file with DataDir).
	DataDir        string
	HistoryStorage string
	// Files the NATS secrets are read from (Config holds the secrets).
	NATSTokenFile, NATSPasswordFile string

	// Tokens: the keys (none: no tokens) and the guest policy.
	Auth   auth.Config
	Guests string // auto, on or off

	// The server API: its key's file (empty: no API) and its own
	// listener (empty: under /api/v1/ on the main one).
	APIKeyFile string
	// NotifyURL and NotifySecretFile: where unread mentions and DMs are
	// posted, and the HMAC secret they are signed with (notify).
	NotifyURL        string
	NotifySecretFile string
	APIListen        string
}

// clusterFlag reports whether the flag called name only acts through NATS.
func clusterFlag(name string) bool {
	switch name {
	case "node", "nats-prefix", "node-heartbeat", "room-ttl", "nats-token-file", "nats-user", "nats-password-file",
		"nats-nkey-seed", "nats-creds", "nats-ca", "nats-cert", "nats-key", "replicas", "nats-publish-timeout", "nats-buffer", "nats-log-size", "nats-log-bytes", "nats-read-bytes":
		return true
	}
	return false
}

// durationOrOff is a duration flag that also takes "off" (stored as -1,
// the engine's value for a disabled feature).
type durationOrOff time.Duration

func (d *durationOrOff) String() string {
	if *d < 0 {
		return "off"
	}
	return time.Duration(*d).String()
}

func (d *durationOrOff) Set(v string) error {
	if v == "off" {
		*d = -1
		return nil
	}
	x, err := time.ParseDuration(v)
	if err != nil || x <= 0 {
		return fmt.Errorf("want a positive duration or off")
	}
	*d = durationOrOff(x)
	return nil
}

// rateOrOff is a rate flag that also takes "off" (stored as -1).
type rateOrOff float64

func (r *rateOrOff) String() string {
	if *r < 0 {
		return "off"
	}
	return strconv.FormatFloat(float64(*r), 'g', -1, 64)
}

func (r *rateOrOff) Set(v string) error {
	if v == "off" {
		*r = -1
		return nil
	}
	x, err := strconv.ParseFloat(v, 64)
	if err != nil || x <= 0 {
		return fmt.Errorf("want a positive number or off")
	}
	*r = rateOrOff(x)
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// serveLists are the repeatable flags of parley serve, gathered before
// they are checked into serveConfig.
type serveLists struct {
	origins, secrets, pubKeys, private, readOnly stringList
}

// serveFlags defines parley serve's flags on a new FlagSet: every flag
// sets one field of the returned config (or list), and its default is the
// field's documented default. The config file's keys and the PARLEY_*
// environment variables are these flags' names (settings.go).
func serveFlags(stderr io.Writer) (*flag.FlagSet, *serveConfig, *serveLists) {
	cfg := &serveConfig{ShutdownTimeout: 10 * time.Second, LogFormat: "text"}
	l := &serveLists{}
	e := &cfg.Engine
	fs := flag.NewFlagSet("parley serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: parley serve [flags]\n\nRuns the Parley server: /test, the chat on /ws (docs/PROTOCOL.md) and the embedded chat page at /.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&e.Addr, "addr", engine.DefaultAddr, "`host:port` to listen on (port 0 picks a free port)")
	fs.StringVar(&e.TLSCertFile, "tls-cert", "", "PEM certificate `file`: with --tls-key, serve HTTPS and wss:// only")
	fs.StringVar(&e.TLSKeyFile, "tls-key", "", "PEM private key `file` for --tls-cert")
	fs.Var(&l.origins, "allow-origin", "an `origin` (https://host[:port]) whose pages may open WebSockets; repeatable. The server's own origin is allowed when reached by an IP address, localhost or --addr's host name; list any other name it is reached by (DNS rebinding); \"*\" allows any (unsafe)")
	fs.IntVar(&e.MaxConnections, "max-connections", engine.DefaultMaxConnections, "most open WebSocket clients; one more takes the slot of the oldest guest that never sent a message (closed 1013), or is refused with 503 (-1: no limit)")
	fs.IntVar(&e.ReservedConnections, "reserved-connections", 0, "of --max-connections, slots kept for signed-in users: guests find the server full before (0: a tenth; -1: none)")
	fs.BoolVar(&e.KeepSilentGuests, "keep-silent-guests", false, "when full, refuse new clients with 503 rather than close guests that never sent a message to make room")
	fs.IntVar(&e.MaxConnectionsPerNetwork, "max-connections-per-network", 0, "most open TCP connections from one network (IPv4 /24, IPv6 /48), upgraded or not, on top of --max-connections-per-addr; more get 429 (0: 4 x --max-connections-per-addr; -1: no limit)")
	fs.IntVar(&e.MaxConnectionsPerAddr, "max-connections-per-addr", engine.DefaultMaxConnectionsPerAddr, "most open TCP connections from one address (IPv4, or IPv6 /56), upgraded or not; more get 429 (-1: no limit, for load tests)")
	fs.Float64Var(&e.MaxPingsPerSecond, "max-pings-per-second", engine.DefaultMaxPingsPerSecond, "pings a client may send per second; more close it with 1008 (-1: no limit)")
	fs.Float64Var(&e.ConnectRatePerAddr, "connect-rate-per-addr", engine.DefaultConnectRatePerAddr, "new TCP connections per second from one address; more get 429 (-1: no limit, for load tests)")
	fs.Float64Var(&e.MaxMessagesPerSecond, "max-messages-per-second", -1, "frames a client may send per second, pings included; more close it with 1008 (-1: no limit)")
	fs.Float64Var(&e.MaxBytesPerSecond, "max-bytes-per-second", -1, "bytes a client may send per second; more close it with 1008 (-1: no limit)")
	fs.Float64Var(&e.MaxInflatedBytesPerSecond, "max-inflated-bytes-per-second", 0, "with --compression, bytes a client's compressed messages may inflate to per second, counted before inflating; more close it with 1008 (0: 4 x --max-message-size; -1: no limit)")
	fs.IntVar(&e.MaxMessageSize, "max-message-size", engine.DefaultMaxMessageSize, "largest message a client may send, in `bytes`; larger ones close it with 1009")
	fs.DurationVar(&e.HandshakeTimeout, "handshake-timeout", engine.DefaultHandshakeTimeout, "time a connection has to complete its upgrade (also the HTTP keep-alive idle time)")
	e.HeartbeatInterval = engine.DefaultHeartbeatInterval
	fs.Var((*durationOrOff)(&e.HeartbeatInterval), "heartbeat-interval", "silence after which a client is pinged; off: no heartbeats, idle clients stay forever")
	fs.DurationVar(&e.HeartbeatTimeout, "heartbeat-timeout", engine.DefaultHeartbeatTimeout, "time a pinged client has to answer before it is closed with 1008")
	fs.DurationVar(&e.CloseTimeout, "close-timeout", engine.DefaultCloseTimeout, "time the server waits for a client's close frame before dropping it")
	fs.IntVar(&e.SendQueueSoftLimit, "send-queue-soft", engine.DefaultSendQueueSoftLimit, "`bytes` queued to a client above which it misses messages")
	fs.IntVar(&e.SendQueueHardLimit, "send-queue-hard", engine.DefaultSendQueueHardLimit, "`bytes` queued to a client above which it is closed with 1008")
	fs.DurationVar(&e.SlowConsumerTimeout, "slow-consumer-timeout", engine.DefaultSlowConsumerTimeout, "time a client may stay above the soft queue limit before it is closed with 1008")
	e.FlushWindow = engine.DefaultFlushWindow
	fs.Var((*durationOrOff)(&e.FlushWindow), "flush-window", "shortest time between a writer's busy round (more than one write) and its next, so that traffic within it shares writes; a round that wrote once (a lone reply) starts no window; off: write as soon as possible")
	fs.IntVar(&e.SocketReadBuffer, "socket-read-buffer", engine.DefaultSocketReadBuffer, "kernel receive buffer per client socket, in `bytes` (-1: kernel autotuning): what a client can push while the server is not reading it")
	fs.IntVar(&e.MaxPendingInput, "max-pending-input", engine.DefaultMaxPendingInput, "`bytes` of a client's messages waiting for their handler above which its socket is not read (TCP backpressure)")
	fs.IntVar(&e.MaxPendingInputTotal, "max-pending-input-total", engine.DefaultMaxPendingInputTotal, "the same over all clients, in `bytes` (-1: no total bound)")
	fs.IntVar(&e.SocketWriteBuffer, "socket-write-buffer", 0, "kernel send buffer per client socket, in `bytes` (0: kernel autotuning, up to 4 MiB for a client that stops reading)")
	fs.BoolVar(&e.Compression, "compression", false, "offer permessage-deflate (RFC 7692): each message compressed once for every client that negotiated it")
	fs.IntVar(&e.CompressionLevel, "compression-level", engine.DefaultCompressionLevel, "deflate level, 1 (fastest) to 9")
	fs.IntVar(&e.CompressionThreshold, "compression-threshold", engine.DefaultCompressionThreshold, "messages shorter than this many `bytes` go uncompressed (-1: compress all)")
	fs.BoolVar(&e.CompressionContextTakeover, "compression-context-takeover", false, "let clients compress with context takeover (better ratios, 32 KiB of server memory per such client)")
	fs.IntVar(&e.Pollers, "pollers", 0, "epoll goroutines (0: one per CPU)")
	fs.IntVar(&e.Writers, "writers", 0, "writer shards (0: one per CPU)")
	ch := &cfg.Chat
	fs.StringVar(&ch.DefaultRoom, "default-room", chat.DefaultRoom, "`room` every client joins on connect, where plain-text messages go")
	fs.IntVar(&ch.HistorySize, "history-size", chat.DefaultHistorySize, "messages each room keeps at least and replays to joiners")
	ch.ResumeWindow = chat.DefaultResumeWindow
	fs.Var((*durationOrOff)(&ch.ResumeWindow), "resume-window", "a room also keeps every message this young, so a client back within it resumes without a gap; off: history-size only")
	fs.IntVar(&ch.HistoryBytes, "history-bytes", chat.DefaultHistoryBytes, "most `bytes` of history a room keeps (and a join replays); the oldest go first")
	fs.DurationVar(&ch.HistoryTTL, "history-ttl", chat.DefaultHistoryTTL, "how long an empty room keeps its history")
	fs.IntVar(&ch.MaxTextLength, "max-text-length", chat.DefaultMaxTextLength, "longest chat message, in `bytes`")
	fs.DurationVar(&ch.EditWindow, "edit-window", chat.DefaultEditWindow, "how long after saying a message its sender may edit or delete it (moderators: always); -1ns: while the history holds it")
	fs.IntVar(&ch.MaxRooms, "max-rooms", chat.DefaultMaxRooms, "rooms one client may be in at once")
	fs.IntVar(&ch.MaxRoomsTotal, "max-rooms-total", chat.DefaultMaxRoomsTotal, "rooms the server holds, empty ones included (at the cap the room empty longest goes)")
	ch.RoomCreateRate = chat.DefaultRoomCreateRate
	fs.Var((*rateOrOff)(&ch.RoomCreateRate), "room-create-rate", "rooms one address may make a minute, on all its connections (its /24 or IPv6 /48: four times as many); off: no limit")
	ch.RateLimit = chat.DefaultRateLimit
	fs.Var((*rateOrOff)(&ch.RateLimit), "rate-limit", "requests per second a client may make, sustained; off: no limit")
	fs.IntVar(&ch.RateBurst, "rate-burst", chat.DefaultRateBurst, "requests a client may make at once above the rate")
	fs.IntVar(&ch.RateHardLimit, "rate-hard-limit", 0, "refused requests (decaying at the rate) after which a client is closed with 1008 (0: 3 x rate-burst)")
	fs.DurationVar(&ch.PresenceGrace, "presence-grace", chat.DefaultPresenceGrace, "a member whose connection closed is told as left only if it has not come back (the same nick) within this: a reload is not announced; -1ns: at once")
	fs.DurationVar(&ch.PresenceInterval, "presence-interval", chat.DefaultPresenceInterval, "how often joins and leaves are sent to a room, coalesced (up to 8x less often while the room keeps changing)")
	fs.IntVar(&ch.PresenceListMax, "presence-list-max", chat.DefaultPresenceListMax, "most members listed to a joiner (the count is always exact)")
	fs.IntVar(&ch.LargeRoom, "large-room", chat.DefaultLargeRoom, "member count above which presence carries counts only")
	fs.DurationVar(&ch.LargeRoomCounts, "large-room-counts", chat.DefaultLargeRoomCounts, "how often, at most, a large room is told its member count")
	fs.BoolVar(&e.ReusePort, "reuse-port", false, "set SO_REUSEPORT: several nodes may listen on one --addr, and the kernel spreads clients over them")
	fs.Var(&l.secrets, "jwt-secret", "`[ALG:]file` holding an HMAC secret (>= 32 bytes) that signs connect tokens; ALG HS256 (default), HS384 or HS512; repeatable")
	fs.Var(&l.pubKeys, "jwt-public-key", "`[ALG:]file`: a PEM public key (RSA, ECDSA, Ed25519) that verifies connect tokens; ALG defaults by key type (RS256, ES256/384/512, EdDSA); repeatable")
	fs.StringVar(&cfg.Auth.JWKSFile, "jwks", "", "a JWKS `file` whose public keys verify connect tokens, each pinned to its alg")
	fs.StringVar(&cfg.Auth.Audience, "jwt-audience", "", "a token's aud must hold this `audience` (empty: not checked)")
	fs.StringVar(&cfg.Auth.Issuer, "jwt-issuer", "", "a token's iss must be this `issuer` (empty: not checked)")
	fs.DurationVar(&cfg.Auth.Leeway, "jwt-leeway", auth.DefaultLeeway, "clock skew tolerated on a token's exp, nbf and iat")
	fs.StringVar(&cfg.Guests, "guests", "auto", "admit clients without a token: on, off, or auto (on only when no key is configured)")
	fs.Var(&l.private, "private-room", "a `room` (or prefix*) only users whose token's rooms claim names it, or who were invited, may join; repeatable")
	fs.Var(&l.readOnly, "read-only-room", "a `room` (or prefix*) only users whose token's say claim names it may say in; repeatable")
	fs.IntVar(&ch.MaxRules, "max-rules", chat.DefaultMaxRules, "most bans, mutes and invitations held")
	fs.StringVar(&cfg.NotifyURL, "notify-url", "", "post signed-in users' mentions and DMs that none of their connections read within --notify-delay to this http(s) `URL` (JSON, signed: X-Parley-Signature; docs/API.md)")
	fs.StringVar(&cfg.NotifySecretFile, "notify-secret-file", "", "`file` holding the HMAC secret (>= 16 bytes) that signs --notify-url's posts; required with it")
	fs.DurationVar(&ch.NotifyDelay, "notify-delay", chat.DefaultNotifyDelay, "how long a mention or DM may stay unread before --notify-url hears of it")
	fs.StringVar(&cfg.APIKeyFile, "api-key-file", "", "`file` holding the server API's key (>= 16 bytes); enables the API (docs/API.md) under /api/v1/")
	fs.StringVar(&cfg.APIListen, "api-listen", "", "serve the server API on this `host:port` only, instead of on the main listener")
	fs.StringVar(&cfg.NATSTokenFile, "nats-token-file", "", "`file` holding the NATS token; with --nats-embedded, the token the embedded server requires (default: a new one, written to a file named in the log)")
	fs.StringVar(&cfg.NATS.User, "nats-user", "", "NATS `user` name (with --nats-password-file)")
	fs.StringVar(&cfg.NATSPasswordFile, "nats-password-file", "", "`file` holding the NATS user's password")
	fs.StringVar(&cfg.NATS.NKeySeedFile, "nats-nkey-seed", "", "NKey seed `file` to authenticate to NATS with")
	fs.StringVar(&cfg.NATS.CredsFile, "nats-creds", "", "NATS credentials `file` (user JWT and NKey seed, as nsc writes)")
	fs.StringVar(&cfg.NATS.CAFile, "nats-ca", "", "PEM CA `file` NATS's certificate is checked against (TLS to NATS)")
	fs.StringVar(&cfg.NATS.CertFile, "nats-cert", "", "PEM client certificate `file` for NATS servers that ask for one (with --nats-key)")
	fs.StringVar(&cfg.NATS.KeyFile, "nats-key", "", "PEM private key `file` of --nats-cert")
	fs.StringVar(&cfg.NATS.URL, "nats", "", "join a cluster: share rooms with the other nodes through the NATS server at this `url` (nats://host:port)")
	fs.Int64Var(&cfg.NATSMaxStore, "nats-max-store", natsbroker.DefaultMaxStore, "with NATS embedded (--data-dir, --nats-embedded): most `bytes` JetStream keeps, on disk and in memory; each room's stream reserves --nats-log-bytes of it, so past max-store/log-bytes rooms a new room is refused (room_limit) and the disk cannot fill; -1: nats-server's own limit (75% of the free disk)")
	fs.StringVar(&cfg.NATSEmbedded, "nats-embedded", "", "start an embedded NATS server (with JetStream) on this `host:port` and use it, for one-machine clusters")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "keep every room's history and epoch, and the access rules, on disk in this `directory` (JetStream file storage), across restarts: alone, through a NATS server embedded in this process (no listener); with --nats-embedded, in that server's store")
	fs.StringVar(&cfg.HistoryStorage, "history-storage", "", "where NATS keeps the rooms' logs and the rules: memory (lost when NATS restarts) or file (default: file with --data-dir, else memory); with --nats, on that server's disk")
	cfg.NATS.RoomTTL = natsbroker.DefaultRoomTTL
	fs.Var((*durationOrOff)(&cfg.NATS.RoomTTL), "room-ttl", "in a cluster (or with --data-dir), how long a room's stream outlives the last node that had the room open (each lets an empty room go after --history-ttl); then its history is deleted from NATS; off: kept")
	fs.DurationVar(&ch.HistoryMaxAge, "history-max-age", 0, "also drop a room's messages older than this from its history (and from NATS); 0: by count only")
	fs.StringVar(&cfg.NATS.Node, "node", "", "this node's `name` in the cluster: 1-16 of a-z, 0-9, _ (default: random)")
	fs.StringVar(&cfg.NATS.Prefix, "nats-prefix", natsbroker.DefaultPrefix, "prefix of the NATS subjects, streams and bucket, so several clusters can share a NATS")
	fs.DurationVar(&cfg.NATS.Heartbeat, "node-heartbeat", natsbroker.DefaultHeartbeat, "how often a node says it is alive; one silent for three is gone")
	fs.IntVar(&cfg.NATS.Replicas, "replicas", 0, "how many NATS servers keep each room's stream and each bucket, 1 to 5 (0: 3 on a NATS cluster of three servers or more, else 1); a NATS that cannot hold them is an error at start")
	fs.IntVar(&cfg.NATS.LogSize, "nats-log-size", 0, "messages each room's stream keeps in NATS: the history and those a node may have to fetch again after an outage (0: the larger of --history-size and 1000)")
	fs.IntVar(&cfg.NATS.LogBytes, "nats-log-bytes", natsbroker.DefaultLogBytes, "most `bytes` each room's stream keeps in NATS (the oldest go first)")
	fs.Int64Var(&cfg.NATS.MaxReadBytes, "nats-read-bytes", natsbroker.DefaultMaxReadBytes, "most `bytes` of signed-in users' read positions NATS keeps (about 100 each; reserved from its store); when full a new position is refused; one unmoved for 90 days goes")
	fs.DurationVar(&cfg.NATS.PublishTimeout, "nats-publish-timeout", natsbroker.DefaultPublishTimeout, "how long a room message may wait for NATS to store it (an outage, a leader election: it is kept and sent again, in order) before its sender is told not_delivered; at most 1m")
	fs.IntVar(&cfg.NATS.MaxBuffered, "nats-buffer", natsbroker.DefaultMaxBuffered, "most `bytes` of room messages a node holds for NATS (unacknowledged, or kept through an outage); past it a message is refused at once (not_delivered)")
	fs.StringVar(&cfg.EchoPath, "echo-path", "", "also mount an echo endpoint (every message back with its type, 16 MiB limit) on this `path`, for conformance suites such as Autobahn's")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve /metrics on this `host:port` only, instead of on the main listener")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "also serve Go's profiles (/debug/pprof/) on --metrics-listen, which it requires")
	cfg.MemoryTrim.Quiet = memtrim.DefaultQuiet
	fs.Var((*durationOrOff)(&cfg.MemoryTrim.Quiet), "memory-trim-after", "once the process has allocated under 1 MiB/s for this long and holds 8 MiB or more it no longer uses (a connection storm's garbage), collect and return it to the system (19,000 idle clients: about 0.5 KB of RSS each less); off: leave it to Go's runtime")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "on SIGINT/SIGTERM, how long to wait for clients to leave before dropping them")
	fs.TextVar(&cfg.LogLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log `format`: text or json")
	fs.String("config", "", "read settings from this TOML `file` (keys: these flags' names; parley config sample writes one); flags, then PARLEY_* environment variables, override it")
	return fs, cfg, l
}

// parseServe maps the command line, the environment (PARLEY_*) and the
// config file (--config) onto serveConfig, in that order of precedence.
func parseServe(args []string, stderr io.Writer) (serveConfig, error) {
	fs, c, l := serveFlags(stderr)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return *c, err
		}
		return *c, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "parley serve: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return *c, errUsage
	}
	if err := applySettings(fs, os.LookupEnv); err != nil {
		return *c, err
	}
	cfg := *c
	e, ch := &cfg.Engine, &cfg.Chat
	origins, secrets, pubKeys, private, readOnly := l.origins, l.secrets, l.pubKeys, l.private, l.readOnly
	// A setting counts as given when it changes its default, wherever it
	// comes from (a sample config file holds every default).
	var alone []string // cluster settings given to a node that is alone: they would do nothing
	maxStoreSet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Value.String() == f.DefValue {
			return
		}
		if clusterFlag(f.Name) {
			alone = append(alone, "--"+f.Name)
		}
		maxStoreSet = maxStoreSet || f.Name == "nats-max-store"
	})
	if maxStoreSet && cfg.NATSEmbedded == "" && cfg.DataDir == "" {
		return cfg, fmt.Errorf("--nats-max-store: only for a NATS this process embeds (--data-dir, --nats-embedded); a nats-server of your own sets max_file_store and max_memory_store")
	}
	if cfg.NATSMaxStore <= 0 && cfg.NATSMaxStore != -1 {
		return cfg, fmt.Errorf("--nats-max-store %d: want a positive number of bytes, or -1", cfg.NATSMaxStore)
	}
	if cfg.NotifyURL == "" && cfg.NotifySecretFile != "" {
		return cfg, fmt.Errorf("--notify-secret-file needs --notify-url")
	}
	if cfg.NotifyURL != "" && cfg.NotifySecretFile == "" {
		return cfg, fmt.Errorf("--notify-url needs --notify-secret-file: the backend must be able to tell the server's posts from others")
	}
	if len(alone) > 0 && !cfg.clustered() {
		return cfg, fmt.Errorf("%s: needs --nats, --nats-embedded or --data-dir (alone, the node uses no NATS)", strings.Join(alone, ", "))
	}
	e.AllowedOrigins = origins
	ch.PrivateRooms, ch.ReadOnlyRooms = private, readOnly
	for _, v := range secrets {
		kf, err := auth.ParseKeyFile(v)
		if err != nil {
			return cfg, fmt.Errorf("--jwt-secret: %w", err)
		}
		cfg.Auth.HMACSecrets = append(cfg.Auth.HMACSecrets, kf)
	}
	for _, v := range pubKeys {
		kf, err := auth.ParseKeyFile(v)
		if err != nil {
			return cfg, fmt.Errorf("--jwt-public-key: %w", err)
		}
		cfg.Auth.PublicKeys = append(cfg.Auth.PublicKeys, kf)
	}
	switch cfg.Guests {
	case "auto":
		ch.Guests = chat.GuestsAuto
	case "on":
		ch.Guests = chat.GuestsAllowed
	case "off":
		ch.Guests = chat.GuestsRefused
	default:
		return cfg, fmt.Errorf("--guests %q: must be on, off or auto", cfg.Guests)
	}
	if cfg.keyed() {
		v, err := auth.New(cfg.Auth)
		if err != nil {
			return cfg, fmt.Errorf("connect tokens (--jwt-secret, --jwt-public-key, --jwks): %w", err)
		}
		ch.Verifier = v
	} else if cfg.Auth.Audience != "" || cfg.Auth.Issuer != "" {
		return cfg, fmt.Errorf("--jwt-audience and --jwt-issuer need a key (--jwt-secret, --jwt-public-key or --jwks)")
	}
	if cfg.APIListen != "" {
		if cfg.APIKeyFile == "" {
			return cfg, fmt.Errorf("--api-listen needs --api-key-file")
		}
		if _, _, err := net.SplitHostPort(cfg.APIListen); err != nil {
			return cfg, fmt.Errorf("--api-listen %q: %w", cfg.APIListen, err)
		}
	}
	if cfg.NATSTokenFile != "" {
		b, err := readSecret(cfg.NATSTokenFile)
		if err != nil {
			return cfg, fmt.Errorf("--nats-token-file: %w", err)
		}
		cfg.NATS.Token = b
	}
	if cfg.NATSPasswordFile != "" {
		b, err := readSecret(cfg.NATSPasswordFile)
		if err != nil {
			return cfg, fmt.Errorf("--nats-password-file: %w", err)
		}
		cfg.NATS.Password = b
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return cfg, fmt.Errorf("--log-format %q: must be text or json", cfg.LogFormat)
	}
	if cfg.EchoPath != "" && (!strings.HasPrefix(cfg.EchoPath, "/") || cfg.EchoPath == "/ws" || cfg.EchoPath == "/test") {
		return cfg, fmt.Errorf("--echo-path %q: must be a path of its own, starting with /", cfg.EchoPath)
	}
	if cfg.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsListen); err != nil {
			return cfg, fmt.Errorf("--metrics-listen %q: %w", cfg.MetricsListen, err)
		}
	}
	if cfg.Pprof && cfg.MetricsListen == "" {
		return cfg, fmt.Errorf("--pprof needs --metrics-listen: profiles are not for the public listener")
	}
	if err := cfg.MemoryTrim.Validate(); err != nil {
		return cfg, err
	}
	if cfg.ShutdownTimeout <= 0 {
		return cfg, fmt.Errorf("--shutdown-timeout %v: must be positive", cfg.ShutdownTimeout)
	}
	if err := e.Validate(); err != nil {
		return cfg, err
	}
	if err := ch.Validate(); err != nil {
		return cfg, err
	}
	if cfg.NATSEmbedded != "" {
		if cfg.NATS.URL != "" {
			return cfg, fmt.Errorf("--nats and --nats-embedded: give one (the embedded server is the cluster's NATS)")
		}
		if _, _, err := net.SplitHostPort(cfg.NATSEmbedded); err != nil {
			return cfg, fmt.Errorf("--nats-embedded %q: %w", cfg.NATSEmbedded, err)
		}
	}
	switch {
	case cfg.DataDir != "" && cfg.NATS.URL != "":
		return cfg, fmt.Errorf("--data-dir and --nats: the NATS server keeps its own store; give --history-storage file")
	case cfg.HistoryStorage == "":
		cfg.HistoryStorage = "memory"
		if cfg.DataDir != "" {
			cfg.HistoryStorage = "file"
		}
	case cfg.HistoryStorage != "memory" && cfg.HistoryStorage != "file":
		return cfg, fmt.Errorf("--history-storage %q: memory or file", cfg.HistoryStorage)
	case cfg.HistoryStorage == "memory" && cfg.DataDir != "":
		return cfg, fmt.Errorf("--history-storage memory and --data-dir: the directory is for the history on disk")
	case cfg.HistoryStorage == "file" && !cfg.clustered():
		return cfg, fmt.Errorf("--history-storage file needs --data-dir, or a NATS (--nats, --nats-embedded) to store it")
	}
	cfg.NATS.FileStorage = cfg.HistoryStorage == "file"
	cfg.NATS.HistoryMaxAge = cfg.Chat.HistoryMaxAge
	if cfg.clustered() {
		nc := cfg.NATS
		if nc.URL == "" {
			nc.URL = "nats://" + cfg.NATSEmbedded // checked here; the real URL comes when it starts
		}
		if err := nc.Validate(); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// keyed reports whether a key to check tokens with is configured.
func (c *serveConfig) keyed() bool {
	return len(c.Auth.HMACSecrets)+len(c.Auth.PublicKeys) > 0 || c.Auth.JWKSFile != ""
}

// readSecret reads a secret from a file: its content without the trailing
// newline, refused when empty.
// startNotify starts the poster of unread notifications, if asked for.
func startNotify(cfg serveConfig, log *slog.Logger) (*notify.Poster, error) {
	if cfg.NotifyURL == "" {
		return nil, nil
	}
	secret, err := readSecret(cfg.NotifySecretFile)
	if err != nil {
		return nil, fmt.Errorf("--notify-secret-file: %w", err)
	}
	p, err := notify.New(notify.Config{URL: cfg.NotifyURL, Secret: []byte(secret), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--notify-url: %w", err)
	}
	log.Info("unread mentions and DMs are posted", "url", cfg.NotifyURL, "delay", cfg.Chat.NotifyDelay.String())
	return p, nil
}

// notifyStats maps the poster's and the hub's counters onto a scrape's.
func notifyStats(p *notify.Poster) func() metrics.NotifyStats {
	if p == nil {
		return nil
	}
	return func() metrics.NotifyStats {
		st := p.Stats()
		return metrics.NotifyStats{Sent: st.Sent, Retried: st.Retried, Failed: st.Failed, Dropped: st.Dropped, Queued: st.Queued}
	}
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// clustered reports whether the node shares rooms through NATS.
// A lone node with --data-dir goes through NATS too, embedded in process.
func (c *serveConfig) clustered() bool {
	return c.NATS.URL != "" || c.NATSEmbedded != "" || c.DataDir != ""
}

func newLogger(cfg serveConfig, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(args []string, stdout, stderr io.Writer) error {
	cfg, err := parseServe(args, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	logging.SetLogger(newNbioLogger(log.With("component", "nbio")))
	raiseOpenFileLimit(log)

	cfg.Engine.Logger = log
	cfg.Engine.Root = static.FS()
	srv, err := engine.New(cfg.Engine)
	if err != nil {
		return err
	}
	if err := srv.Handle("/test", http.HandlerFunc(itWorks)); err != nil {
		return err
	}
	cfg.Chat.Logger = log
	var broker *natsbroker.Broker
	if cfg.clustered() {
		if cfg.DataDir != "" {
			if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
				return fmt.Errorf("--data-dir: %w", err)
			}
		}
		switch {
		case cfg.NATSEmbedded == "" && cfg.DataDir != "":
			ns, err := natsbroker.StartServer(natsbroker.ServerConfig{InProcess: true, StoreDir: cfg.DataDir, MaxStore: cfg.NATSMaxStore, Logger: log})
			if err != nil {
				return err
			}
			defer ns.Shutdown()
			cfg.NATS.URL, cfg.NATS.Embedded = "", ns
			if cfg.NATS.Node == "" {
				cfg.NATS.Node = chat.LocalNode
			}
			log.Info("history on disk: NATS embedded in this process, without a listener", "data_dir", cfg.DataDir)
		case cfg.NATSEmbedded != "":
			ns, err := natsbroker.StartServer(natsbroker.ServerConfig{Addr: cfg.NATSEmbedded, Token: cfg.NATS.Token, StoreDir: cfg.DataDir, MaxStore: cfg.NATSMaxStore, Logger: log})
			if err != nil {
				return err
			}
			defer ns.Shutdown()
			cfg.NATS.URL, cfg.NATS.Token = ns.URL(), ns.Token()
			tokenFile := cfg.NATSTokenFile
			if tokenFile == "" {
				f, err := writeTokenFile(ns.Token())
				if err != nil {
					return err
				}
				defer os.Remove(f)
				tokenFile = f
			}
			log.Info("embedded NATS server: it requires its token; other nodes join with --nats and --nats-token-file",
				"url", ns.URL(), "token_file", tokenFile)
		}
		cfg.NATS.HistorySize = cfg.Chat.HistorySize
		cfg.NATS.Logger = log
		if broker, err = natsbroker.New(cfg.NATS); err != nil {
			return err
		}
		cfg.Chat.Broker = broker
		log = log.With("node", broker.Node())
		cfg.Chat.Logger = log
		where := cfg.NATS.URL
		if cfg.NATS.Embedded != nil {
			where = "in process"
		}
		log.Info("joined the cluster", "nats", where, "history_storage", cfg.HistoryStorage)
	}
	poster, err := startNotify(cfg, log)
	if err != nil {
		return err
	}
	if poster != nil {
		defer poster.Close()
		cfg.Chat.Notifier = poster
	}
	hub, err := chat.New(cfg.Chat)
	if err != nil {
		return err
	}
	if _, err := srv.Mount("/ws", hub); err != nil {
		return err
	}
	if err := srv.Handle("/ws/check", hub.CheckHandler()); err != nil { // the page asks why a connection failed
		return err
	}
	if err := srv.Handle(parleyjs.Path, parleyjs.Handler()); err != nil { // the JavaScript client, for pages that import it
		return err
	}
	probes := &health{}
	if broker != nil {
		probes.ready = broker.Ready
	}
	if err := probes.handle(srv.Handle); err != nil {
		return err
	}
	apiSrv, stopAPI, err := startAPI(cfg, hub, srv, log)
	if err != nil {
		return err
	}
	defer stopAPI()
	if cfg.EchoPath != "" {
		if _, err := srv.MountWith(cfg.EchoPath, &engine.Echo{}, &engine.MountOptions{MaxMessageSize: 16 << 20, Inline: true}); err != nil {
			return err
		}
	}
	cfg.MemoryTrim.Logger = log
	trimmer, err := memtrim.New(cfg.MemoryTrim)
	if err != nil {
		return err
	}
	var memStats func() metrics.MemoryStats
	if cfg.MemoryTrim.Quiet >= 0 {
		memStats = func() metrics.MemoryStats {
			return metrics.MemoryStats{Trims: trimmer.Trims(), FreedBytes: trimmer.Freed()}
		}
	}
	m, err := metrics.New(metrics.Config{Build: metrics.Build{Version: buildVersion, Revision: buildRevision}},
		metrics.Sources{Engine: srv.Stats, Chat: chatStats(hub), Broker: brokerStats(broker), API: apiStats(apiSrv), Notify: notifyStats(poster),
			Memory: memStats})
	if err != nil {
		return err
	}
	var metricsSrv *http.Server
	if cfg.MetricsListen == "" {
		if err := srv.Handle("/metrics", m.Handler()); err != nil {
			return err
		}
	} else {
		ln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		_ = probes.handle(func(p string, h http.Handler) error { mux.Handle(p, h); return nil })
		if cfg.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := metricsSrv.Serve(ln); err != nil && err != http.ErrServerClosed {
				log.Error("metrics listener failed", "err", err)
			}
		}()
		log.Info("metrics", "addr", ln.Addr().String())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Start(); err != nil {
		return err
	}
	scheme := "http"
	if cfg.Engine.TLSCertFile != "" {
		scheme = "https"
	}
	log.Info("open your browser at " + scheme + "://" + srv.Addr().String() + "/")
	trimDone := make(chan struct{})
	go func() { defer close(trimDone); trimmer.Run(ctx) }()
	<-ctx.Done()
	stop()
	<-trimDone
	probes.stopping.Store(true)
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(sctx)
	}
	return nil
}

// chatStats maps the chat's counters onto the metrics package's view.
func chatStats(hub *chat.Hub) func() metrics.ChatStats {
	return func() metrics.ChatStats {
		st := hub.Stats()
		return metrics.ChatStats{
			Rooms: st.Rooms, Members: st.Members, Published: st.Published, Received: st.Received, DMs: st.DMs,
			RateLimited: st.RateLimited, PresenceChanges: st.PresenceChanges, PresenceSent: st.PresenceSent,
			PublishFailed: st.PublishFailed, Errors: st.Errors, Users: st.Users, Refused: st.Refused, Dropped: st.Dropped,
			Reads: st.Reads, ReadsFailed: st.ReadsFailed, ReadsRefused: st.ReadsRefused,
			Notified: st.Notified, NotesRead: st.NotesRead, NotesDropped: st.NotesDropped, ReactionFrames: st.ReactionFrames,
		}
	}
}

// brokerStats maps a NATS broker's counters onto the metrics package's
// view; nil when the node is alone.
func brokerStats(b *natsbroker.Broker) func() metrics.BrokerStats {
	if b == nil {
		return nil
	}
	var bounds []float64
	for _, d := range natsbroker.LagBuckets() {
		bounds = append(bounds, d.Seconds())
	}
	return func() metrics.BrokerStats {
		st := b.Stats()
		return metrics.BrokerStats{
			Connected: st.Connected, Nodes: st.Nodes, Published: st.Published, PublishErrors: st.PublishErrors,
			Received: st.Received, Repaired: st.Repaired, Lost: st.Lost, Duplicates: st.Duplicates,
			PresenceReceived: st.PresenceReceived, DirectReceived: st.DirectReceived, Resets: st.Resets,
			NodesGone: st.NodesGone, SlowConsumer: st.SlowConsumer, Reconnects: st.Reconnects,
			Disconnects: st.Disconnects, LagBounds: bounds, LagCounts: st.LagCounts, LagSum: st.LagSum.Seconds(),
			ControlReceived: st.ControlReceived, Recreated: st.Recreated, StreamsDeleted: st.StreamsDeleted, Stalls: st.Stalls, DroppedBeats: st.DroppedBeats, DroppedRules: st.DroppedRules,
			PublishRetries: st.PublishRetries, PublishTimeouts: st.PublishTimeouts, BufferFull: st.BufferFull, Overtaken: st.Overtaken,
			BufferedBytes: st.BufferedBytes, BufferedMsgs: st.BufferedMsgs, FetchRetries: st.FetchRetries, ProvisionRetries: st.ProvisionRetries, LateAcks: st.LateAcks, TailRepairs: st.TailRepairs,
		}
	}
}

// writeTokenFile writes an embedded NATS server's token to a new file
// only this user can read, and returns its name.
func writeTokenFile(token string) (string, error) {
	f, err := os.CreateTemp("", "parley-nats-*.token")
	if err != nil {
		return "", fmt.Errorf("writing the NATS token: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(token + "\n"); err != nil {
		return "", fmt.Errorf("writing the NATS token: %w", err)
	}
	return f.Name(), nil // CreateTemp makes it 0600
}

// startAPI starts the server API if a key is configured: under /api/v1/
// on srv, or on --api-listen. It returns the API (nil when off) and what
// stops its listener.
func startAPI(cfg serveConfig, hub *chat.Hub, srv *engine.Server, log *slog.Logger) (*api.Server, func(), error) {
	if cfg.APIKeyFile == "" {
		return nil, func() {}, nil
	}
	key, err := readSecret(cfg.APIKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--api-key-file: %w", err)
	}
	a, err := api.New(api.Config{Key: key, Logger: log, NodeStats: func() any { return srv.Stats() }}, hub)
	if err != nil {
		return nil, nil, fmt.Errorf("--api-key-file: %w", err)
	}
	if cfg.APIListen == "" {
		if err := srv.Handle("/api/", a.Handler()); err != nil {
			return nil, nil, err
		}
		log.Info("server API", "path", api.Prefix)
		return a, func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return nil, nil, fmt.Errorf("--api-listen: %w", err)
	}
	hs := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Error("API listener failed", "err", err)
		}
	}()
	log.Info("server API", "addr", ln.Addr().String(), "path", api.Prefix)
	return a, func() { _ = hs.Close() }, nil
}

// apiStats maps the API's counters onto the metrics package's view; nil
// when the API is off.
func apiStats(a *api.Server) func() []metrics.APIHit {
	if a == nil {
		return nil
	}
	return func() []metrics.APIHit {
		var out []metrics.APIHit
		for h, n := range a.Stats() {
			out = append(out, metrics.APIHit{Route: h.Route, Status: h.Status, Count: n})
		}
		return out
	}
}

// itWorks is the seed's /test route.
func itWorks(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if r.Method == http.MethodGet {
		_, _ = io.WriteString(w, "<h1>It works!</h1>")
	}
}

// raiseOpenFileLimit raises the soft open-file limit to the hard one, since
// every client costs a file descriptor, and logs what it got.
func raiseOpenFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the open-file limit", "err", err)
		return
	}
	before := lim.Cur
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Warn("cannot raise the open-file limit", "soft", before, "hard", lim.Max, "err", err)
			return
		}
	}
	log.Info("open-file limit", "soft", lim.Cur, "hard", lim.Max, "was", before)
}

// nbioLogger routes nbio's printf-style logs into slog.
//
// nbio logs some errors once per connection (a connection refused past its
// MaxLoad, say): under attack that is a log line per attempt. Warnings and
// errors are logged at most once a second, with the count of those left
// out meanwhile.
type nbioLogger struct {
	l *slog.Logger

	mu      sync.Mutex
	last    time.Time
	skipped int
}

func newNbioLogger(l *slog.Logger) *nbioLogger { return &nbioLogger{l: l} }

func (n *nbioLogger) Debug(f string, v ...any) { n.l.Debug(fmt.Sprintf(f, v...)) }
func (n *nbioLogger) Info(f string, v ...any)  { n.l.Debug(fmt.Sprintf(f, v...)) } // nbio's info is start-up chatter
func (n *nbioLogger) Warn(f string, v ...any)  { n.limited(slog.LevelWarn, f, v) }
func (n *nbioLogger) Error(f string, v ...any) { n.limited(slog.LevelError, f, v) }

func (n *nbioLogger) limited(level slog.Level, f string, v []any) {
	now := time.Now()
	n.mu.Lock()
	if now.Sub(n.last) < time.Second {
		n.skipped++
		n.mu.Unlock()
		return
	}
	skipped := n.skipped
	n.last, n.skipped = now, 0
	n.mu.Unlock()
	if skipped > 0 {
		n.l.Log(context.Background(), level, fmt.Sprintf(f, v...), "left_out_since_last", skipped)
		return
	}
	n.l.Log(context.Background(), level, fmt.Sprintf(f, v...))
}
