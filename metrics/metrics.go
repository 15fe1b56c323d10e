package metrics

import (
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"sort"

	"github.com/parleyhq/parley/engine"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ChatStats is the chat's part of a scrape (cmd maps chat.Stats onto it).
type ChatStats struct {
	Rooms           int
	Members         int
	Published       uint64
	Received        uint64
	DMs             uint64
	RateLimited     uint64
	PresenceChanges uint64
	PresenceSent    uint64
	PublishFailed   uint64
	Reads           uint64            // read marks that moved a position
	ReadsFailed     uint64            // read-state calls the store failed
	ReadsRefused    uint64            // read-state calls refused: too many waited
	Notified        uint64            // unread mentions and DMs handed to the poster
	NotesRead       uint64            // read within the delay: not posted
	NotesDropped    uint64            // dropped: too many waited for the delay
	ReactionFrames  uint64            // reactions events sent, each to a whole room
	Errors          map[string]uint64 // by code
	Users           int
	Refused         map[string]uint64 // handshakes, by reason
	Dropped         map[string]uint64 // bus messages refused, by kind
}

// BrokerStats is a cluster broker's part of a scrape (cmd maps
// natsbroker.Stats onto it).
type BrokerStats struct {
	Connected        bool
	Nodes            int // other live nodes
	Published        uint64
	PublishErrors    uint64
	Received         uint64
	Repaired         uint64
	Lost             uint64
	Duplicates       uint64
	PresenceReceived uint64
	DirectReceived   uint64
	Resets           uint64
	NodesGone        uint64
	SlowConsumer     uint64
	Reconnects       uint64
	Disconnects      uint64
	LagBounds        []float64 // seconds: the upper bounds of LagCounts but the last
	LagCounts        []uint64  // per bucket (not cumulative); the last is above every bound
	LagSum           float64   // seconds
	ControlReceived  uint64
	Recreated        uint64
	StreamsDeleted   uint64
	Stalls           uint64
	DroppedBeats     uint64
	DroppedRules     uint64
	PublishRetries   uint64
	PublishTimeouts  uint64
	BufferFull       uint64
	Overtaken        uint64
	BufferedBytes    int
	BufferedMsgs     int
	FetchRetries     uint64
	ProvisionRetries uint64
	LateAcks         uint64
	TailRepairs      uint64
}

// APIHit is how many server API calls a route answered with a status.
type APIHit struct {
	Route  string
	Status int
	Count  uint64
}

// Sources are the snapshots a scrape reads; a nil source is left out.
type Sources struct {
	Engine func() engine.Stats
	Chat   func() ChatStats
	Broker func() BrokerStats // a cluster's broker; nil alone
	API    func() []APIHit    // the server API; nil when off
	Notify func() NotifyStats // the poster of unread notifications; nil when off
	Memory func() MemoryStats // the memory trimmer; nil when off
}

// MemoryStats is the memory trimmer's part of a scrape (cmd maps
// internal/memtrim's counters onto it).
type MemoryStats struct {
	Trims, FreedBytes uint64
}

// NotifyStats is the notification poster's part of a scrape (cmd maps
// notify.Stats onto it).
type NotifyStats struct {
	Sent, Retried, Failed, Dropped uint64
	Queued                         int
}

// Build describes the binary for parley_build_info. Zero fields are filled
// from the build information Go recorded.
type Build struct {
	Version, Revision, GoVersion string
}

// Config configures New. The zero value is valid.
type Config struct {
	// Registry receives the collectors. Default: a new registry (never
	// Prometheus' global one).
	Registry *prometheus.Registry
	// Build labels parley_build_info.
	Build Build
}

// Metrics is a registry with Parley's collectors.
type Metrics struct {
	reg *prometheus.Registry
}

// New registers Parley's collectors, the Go and process collectors and
// parley_build_info.
func New(cfg Config, src Sources) (*Metrics, error) {
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	b := fillBuild(cfg.Build)
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "parley_build_info",
		Help:        "Always 1; its labels describe the running binary.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	info.Set(1)
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		info,
		newCollector(src),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return &Metrics{reg: reg}, nil
}

// Registry returns the registry the collectors are in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func fillBuild(b Build) Build {
	if b.GoVersion == "" {
		b.GoVersion = runtime.Version()
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && b.Revision == "" {
				b.Revision = s.Value
			}
		}
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	if b.Revision == "" {
		b.Revision = "unknown"
	}
	return b
}

// sortedKeys returns m's keys in order, so scrapes list labels stably.
func sortedKeys(m map[string]uint64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
