package natsbroker

import (
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/internal/cfgerr"
)

// Defaults applied to zero Config fields.
const (
	DefaultPrefix         = "parley"
	DefaultHeartbeat      = time.Second
	DefaultPublishTimeout = 30 * time.Second
	DefaultMaxBuffered    = 64 << 20
	DefaultLogSize        = 1000
	DefaultLogBytes       = 256 << 10
	DefaultMaxReadBytes   = 64 << 20
	ReadTTL               = 90 * 24 * time.Hour
	DefaultRequestTimeout = 5 * time.Second
	DefaultRoomTTL        = 10 * time.Minute
)

// Config configures a Broker. URL is required; the other fields have
// defaults.
type Config struct {
	// URL is the NATS server to connect to ("nats://127.0.0.1:4222"); a
	// comma-separated list names several servers of one NATS cluster.
	// Required unless Embedded is set.
	URL string

	// Embedded, when set, is an embedded server (StartServer) to connect to
	// in process, without a socket: a lone node keeping its history on
	// disk. URL must then be empty.
	Embedded *Server

	// Node is this node's name in the Parley cluster: 1 to 16 lower-case
	// letters, digits or '_', unique among the live nodes. Guests' nicks
	// carry it (guest-<node>-<id>). Default: random letters and digits.
	Node string

	// Prefix starts every subject, stream and bucket name this broker
	// uses, so several Parley clusters can share a NATS server. Default
	// "parley".
	Prefix string

	// HistorySize is how many messages of each room NATS keeps: the
	// history a node loads when it opens a room. Default
	// chat.DefaultHistorySize (100); set it to the chat's HistorySize.
	HistorySize int

	// LogSize is how many messages each room's stream keeps: its history
	// and those a node may have to fetch after missing them (a reconnect,
	// a NATS server's death: a busy room says 50 a second, and a node may
	// be away for seconds). A message the stream no longer has when a node
	// fetches it is lost for that node's members. Default the larger of
	// HistorySize and 1,000; at least HistorySize.
	LogSize int

	// LogBytes bounds the bytes each room's stream keeps (its MaxBytes):
	// the oldest go first. JetStream reserves it from its store when the
	// stream is made (ServerConfig.MaxStore). Default 256 KiB: four times
	// a room's history in memory (chat.Config.HistoryBytes, 64 KiB), for
	// the messages a node may have to fetch again after an outage.
	LogBytes int

	// MaxReadBytes bounds the read-state bucket (users' read positions,
	// about 100 bytes each): JetStream reserves it from its store. A full
	// bucket refuses a new user's or room's position (the read request
	// gets unavailable); positions not moved for ReadTTL (90 days) go.
	// Default 64 MiB.
	MaxReadBytes int64

	// HistoryMaxAge, when positive, also drops a room's messages older
	// than this (the stream's MaxAge). Default 0: by count only.
	HistoryMaxAge time.Duration

	// RoomTTL is how long a room's stream outlives the last node that had
	// the room open (a hub lets an empty room go after its HistoryTTL):
	// then the stream, its history and the memory or disk it holds are
	// deleted from NATS. Default 10 min; -1 keeps streams until NATS
	// loses them (with FileStorage: for good).
	RoomTTL time.Duration

	// FileStorage keeps the rooms' logs and the access rules on the NATS
	// server's disk (JetStream file storage), so history, epochs and bans
	// survive restarts of NATS and of every node. Default false: in
	// memory, lost when NATS restarts (rooms then start a new epoch).
	// Streams made before keep the storage they were made with.
	FileStorage bool

	// Heartbeat is how often a node tells the others it is alive; one
	// silent for three heartbeats is gone (its members leave the rooms,
	// its nicks are free). Default 1 s.
	Heartbeat time.Duration

	// PublishTimeout bounds how long a room message may wait for NATS to
	// store it: while NATS, or its stream's leader, is away (a server
	// restarting, a leader election), the message is kept and published
	// again, under the same message id (JetStream drops a copy it has), and
	// the room's later messages wait behind it, in order. Past the bound
	// the sender is told the message was not delivered, and so are those
	// of the same room queued behind it. Default 30 s; at most 1 min (a
	// stream's deduplication window is 2 min).
	PublishTimeout time.Duration

	// MaxBuffered bounds the bytes of room messages this node holds for
	// NATS (sent and not yet acknowledged, or waiting out an outage);
	// past it a message is refused at once (the sender is told it was not
	// delivered). Default 64 MiB.
	MaxBuffered int

	// Replicas is how many NATS servers keep each room's stream and each
	// bucket (nicks, rules, rooms): with 3, the cluster's history, nicks
	// and rules survive the loss of any one server. 0 (the default)
	// chooses: 3 when the NATS cluster has three servers or more, else 1.
	// A NATS that cannot hold Replicas (a lone server, too few JetStream
	// servers) is an error at New. Streams and buckets made with another
	// count are changed to this one when the node opens them.
	Replicas int

	// RequestTimeout bounds NATS requests: opening a room, nick claims and
	// lookups. Default 5 s.
	RequestTimeout time.Duration

	// Credentials for NATS, at most one kind: a token, a user and
	// password, an NKey seed file, or a creds file (JWT and seed, as nsc
	// writes them). Default none.
	Token        string
	User         string
	Password     string
	NKeySeedFile string
	CredsFile    string

	// TLS: CAFile is the PEM CA bundle the server's certificate is checked
	// against (it implies TLS); CertFile and KeyFile a client certificate,
	// for servers that ask for one.
	CAFile   string
	CertFile string
	KeyFile  string

	// Logger receives the broker's logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.Node == "" {
		d.Node = randomNode()
	}
	if d.Prefix == "" {
		d.Prefix = DefaultPrefix
	}
	if d.HistorySize == 0 {
		d.HistorySize = chat.DefaultHistorySize
	}
	if d.Heartbeat == 0 {
		d.Heartbeat = DefaultHeartbeat
	}
	if d.PublishTimeout == 0 {
		d.PublishTimeout = DefaultPublishTimeout
	}
	if d.LogSize == 0 {
		d.LogSize = max(d.HistorySize, DefaultLogSize)
	}
	if d.MaxReadBytes == 0 {
		d.MaxReadBytes = DefaultMaxReadBytes
	}
	if d.LogBytes == 0 {
		d.LogBytes = DefaultLogBytes
	}
	if d.MaxBuffered == 0 {
		d.MaxBuffered = DefaultMaxBuffered
	}
	if d.RequestTimeout == 0 {
		d.RequestTimeout = DefaultRequestTimeout
	}
	if d.RoomTTL == 0 {
		d.RoomTTL = DefaultRoomTTL
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return d
}

// dedupWindow is every room stream's deduplication window: a message
// published again within it under the same id is stored once.
const dedupWindow = 2 * time.Minute

// maxPublishTimeout bounds PublishTimeout: retries end well within the
// deduplication window.
const maxPublishTimeout = time.Minute

// Validate reports the first invalid field, after defaults are applied.
func (c *Config) Validate() error {
	d := c.withDefaults()
	switch {
	case d.URL == "" && d.Embedded == nil:
		return cfgerr.New("URL", "natsbroker: URL is required")
	case d.URL != "" && d.Embedded != nil:
		return cfgerr.New("URL", "natsbroker: URL and Embedded: give one")
	case d.RoomTTL < 0 && d.RoomTTL != -1 || d.RoomTTL > 0 && d.RoomTTL < 100*time.Millisecond:
		return cfgerr.New("RoomTTL", "natsbroker: RoomTTL (%v) must be at least 100ms, or -1 to keep streams", d.RoomTTL)
	case d.HistoryMaxAge < 0:
		return cfgerr.New("HistoryMaxAge", "natsbroker: HistoryMaxAge (%v) must not be negative", d.HistoryMaxAge)
	case d.HistoryMaxAge > 0 && d.HistoryMaxAge < time.Second:
		return cfgerr.New("HistoryMaxAge", "natsbroker: HistoryMaxAge (%v) must be at least 1s", d.HistoryMaxAge)
	case d.Replicas < 0 || d.Replicas > 5:
		return cfgerr.New("Replicas", "natsbroker: Replicas (%d) must be 1 to 5 (JetStream's most), or 0 to choose", d.Replicas)
	case d.PublishTimeout > maxPublishTimeout:
		return cfgerr.New("PublishTimeout", "natsbroker: PublishTimeout (%v) must be at most %v: a retry must fall within the streams' deduplication window (%v)", d.PublishTimeout, maxPublishTimeout, dedupWindow)
	case d.MaxBuffered < 0:
		return cfgerr.New("MaxBuffered", "natsbroker: MaxBuffered (%d) must not be negative", d.MaxBuffered)
	}
	if !validName(d.Node, 16) {
		return cfgerr.New("Node", "natsbroker: Node %q: 1 to 16 lower-case letters, digits or '_'", d.Node)
	}
	if !validName(d.Prefix, 32) {
		return cfgerr.New("Prefix", "natsbroker: Prefix %q: 1 to 32 lower-case letters, digits or '_'", d.Prefix)
	}
	kinds := 0
	for _, set := range []bool{d.Token != "", d.User != "" || d.Password != "", d.NKeySeedFile != "", d.CredsFile != ""} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds > 1:
		return cfgerr.New("Token", "natsbroker: give one kind of credentials: Token, User and Password, NKeySeedFile or CredsFile")
	case (d.User == "") != (d.Password == ""):
		return cfgerr.New("User", "natsbroker: User and Password go together")
	case (d.CertFile == "") != (d.KeyFile == ""):
		return cfgerr.New("CertFile", "natsbroker: CertFile and KeyFile go together")
	}
	if d.HistorySize < 1 {
		return cfgerr.New("HistorySize", "natsbroker: HistorySize (%d) must be at least 1", d.HistorySize)
	}
	if d.LogSize < d.HistorySize {
		return cfgerr.New("LogSize", "natsbroker: LogSize (%d) must be at least HistorySize (%d)", d.LogSize, d.HistorySize)
	}
	if d.MaxReadBytes < 4096 {
		return cfgerr.New("MaxReadBytes", "natsbroker: MaxReadBytes (%d) must be at least 4096", d.MaxReadBytes)
	}
	if d.LogBytes < 4096 {
		return cfgerr.New("LogBytes", "natsbroker: LogBytes (%d) must be at least 4096", d.LogBytes)
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"Heartbeat", d.Heartbeat}, {"PublishTimeout", d.PublishTimeout}, {"RequestTimeout", d.RequestTimeout}} {
		if f.v < 10*time.Millisecond {
			return cfgerr.New(f.name, "natsbroker: %s (%v) must be at least 10ms", f.name, f.v)
		}
	}
	return nil
}

func validName(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// randomNode returns a random name: up to 13 letters and digits.
func randomNode() string { return strconv.FormatUint(rand.Uint64(), 36) }

// url names the server connected to, for errors and logs.
func (c *Config) url() string {
	if c.Embedded != nil {
		return "embedded (in process)"
	}
	return c.URL
}

// ConfigError is the error Validate returns: errors.As finds it, its Field
// names the field at fault, and errors.Is(err, ErrInvalidConfig) holds.
type ConfigError = cfgerr.Error

// ErrInvalidConfig is what every error of Validate Is.
var ErrInvalidConfig = cfgerr.ErrInvalid
