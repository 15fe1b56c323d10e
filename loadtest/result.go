package loadtest

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Latency holds percentiles in milliseconds.
type Latency struct {
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Count uint64  `json:"count"`
}

// Round is one burst's outcome.
type Round struct {
	Recipients       int64   `json:"recipients"`
	Deliveries       int64   `json:"deliveries"`
	Missing          int64   `json:"missing"` // never came
	Late             int64   `json:"late"`    // came after the round's timeout
	Seconds          float64 `json:"seconds"` // first send to last delivery
	DeliveriesPerSec float64 `json:"deliveries_per_second"`
}

// Result is what a run measured.
// FloodResult is what the flood scenario's hostile clients did, and the
// server's peak memory meanwhile; the healthy clients' figures are the
// Result's (EndToEnd is their round trip).
type FloodResult struct {
	Flooders           int              `json:"flooders"`
	Kind               string           `json:"kind"`
	Size               int              `json:"size"`
	Frames             int64            `json:"frames"` // frames the flooders' sockets took
	Bytes              int64            `json:"bytes"`
	Connects           int64            `json:"connects"`                        // upgrades that succeeded
	ClosedByServer     int64            `json:"closed_by_server"`                // flooder connections the server ended
	Refused            map[string]int64 `json:"refused,omitempty"`               // failed connects, by cause
	ServerPeakRSSBytes int64            `json:"server_peak_rss_bytes,omitempty"` // sampled every 100 ms (ServerPIDs)
}

// Result is a run's outcome.
type Result struct {
	Scenario         string         `json:"scenario"`
	Targets          []string       `json:"targets"`
	Clients          int            `json:"clients"`
	Connected        int            `json:"connected"`
	Failed           int            `json:"failed"`
	Failures         map[string]int `json:"failures_by_cause"`
	ConnectSeconds   float64        `json:"connect_seconds"`
	ConnectRate      float64        `json:"connects_per_second"`
	ConnectLatency   Latency        `json:"connect_latency"`
	OpenAtEnd        int            `json:"open_at_end"`
	ClosedByServer   map[string]int `json:"closed_by_server"`
	MessagesReceived int64          `json:"messages_received"`
	Flood            *FloodResult   `json:"flood,omitempty"` // the flood scenario's hostile clients
	Siege            *SiegeResult   `json:"siege,omitempty"` // the siege scenario's besiegers
	MessagesSent     int64          `json:"messages_sent,omitempty"`
	Rounds           []Round        `json:"rounds,omitempty"`
	Expected         int64          `json:"deliveries_expected,omitempty"`
	Delivered        int64          `json:"deliveries,omitempty"`
	Missing          int64          `json:"missing"`
	Late             int64          `json:"late,omitempty"` // burst: delivered after their round's timeout (not lost)
	Duplicated       int64          `json:"duplicated"`
	OutOfOrder       int64          `json:"out_of_order"`
	DeliveriesPerSec float64        `json:"deliveries_per_second,omitempty"`
	EndToEnd         Latency        `json:"end_to_end_latency"`
	ProtocolErrors   int64          `json:"protocol_errors"`
	WireBytesIn      int64          `json:"wire_bytes_in"`                 // bytes read from the servers after the upgrades
	WireBytesPerMsg  float64        `json:"wire_bytes_per_message"`        // of them per message received
	DeflateClients   int64          `json:"deflate_clients,omitempty"`     // clients the servers agreed permessage-deflate with
	CompressedIn     int64          `json:"compressed_messages,omitempty"` // messages received compressed
	RoomSize         int            `json:"room_size,omitempty"`
	Joined           int            `json:"joined,omitempty"`
	JoinsAsked       int            `json:"joins_asked,omitempty"`  // chatters that asked to join; a run where fewer joined fails
	JoinRefusal      string         `json:"join_refusal,omitempty"` // the first error a join was answered with
	SendSeconds      float64        `json:"send_seconds,omitempty"`
	Stray            int64          `json:"stray,omitempty"` // messages from another room
	ChurnCycles      int64          `json:"churn_cycles,omitempty"`
	ChurnFailures    int64          `json:"churn_failures,omitempty"`
	ChurnLatency     Latency        `json:"churn_connect_latency,omitzero"`
	Reconnects       int64          `json:"reconnects,omitempty"`  // clients closed by the server that came back (Reconnect)
	Resumed          int64          `json:"resumed,omitempty"`     // of them, rejoined with the replay of what they missed
	Resent           int64          `json:"resent,omitempty"`      // messages said again after a reconnect, never having come back to their sender
	Retried          int64          `json:"not_delivered_retries"` // messages the server answered not_delivered, said again under their id
	ReconnectLatency Latency        `json:"reconnect_latency,omitzero"`
	ReconnectRetries map[string]int `json:"reconnect_retries,omitempty"` // failed reconnection attempts (then tried elsewhere), by cause
	RedialLatency    Latency        `json:"redial_latency,omitzero"`     // the reconnections themselves: connect and upgrade // from the close to the rejoin request
	ClientCPUSeconds float64        `json:"client_cpu_seconds"`
	ServerCPUSeconds float64        `json:"server_cpu_seconds,omitempty"`
	Series           []Sample       `json:"series"`
	Workers          int            `json:"workers,omitempty"`
	Passed           bool           `json:"passed"`
	Errors           int64          `json:"errors"` // failed + lost + missing + duplicated + stray
	Verdict          string         `json:"verdict"`
	ClientRSSBytes   int64          `json:"client_rss_bytes"`
	ClientRSSPerConn float64        `json:"client_rss_bytes_per_conn"`
	ServerRSSBytes   int64          `json:"server_rss_bytes,omitempty"`
	ServerRSSPerConn float64        `json:"server_rss_bytes_per_conn,omitempty"`
	Seconds          float64        `json:"seconds"`
	HitTimeLimit     bool           `json:"hit_time_limit"`
	Ramp             []RampPoint    `json:"ramp,omitempty"`       // connections while the clients connect, every 100 ms
	StartedAt        string         `json:"started_at,omitempty"` // RFC 3339
	Command          []string       `json:"command,omitempty"`    // the command line, as given (set by the caller)
	Revision         string         `json:"revision,omitempty"`   // the load generator's build (set by the caller)

	latency   *Histogram // end to end, for merging workers' results
	connect   *Histogram // connect times, likewise
	reconnect *Histogram // reconnection times (Reconnect), likewise
	redial    *Histogram // their connect-and-upgrade part
}

// Sample is one second of a run.
type Sample struct {
	T        float64 `json:"t"`    // seconds since the start
	Open     int     `json:"open"` // connections open
	Failed   int     `json:"failed"`
	Received int64   `json:"received"` // messages received in that second
	P50      float64 `json:"p50_ms"`   // end-to-end latency of that second's deliveries
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
	// The servers of ServerPIDs, summed: resident memory now, and CPU
	// used in that second (a share of one core: 1.0 = one core busy).
	ServerRSS int64   `json:"server_rss_bytes,omitempty"`
	ServerCPU float64 `json:"server_cpu,omitempty"`
}

// RampPoint is the connections open at T seconds into the run, sampled
// every 100 ms while the clients connect.
type RampPoint struct {
	T    float64 `json:"t"`
	Open int     `json:"open"`
}

// evaluate sums the errors and applies the thresholds.
func (r *Result) evaluate(cfg Config) {
	lost := int64(0)
	for _, n := range r.ClosedByServer {
		lost += int64(n)
	}
	r.Errors = int64(r.Failed) + lost + r.Missing + r.Duplicated + r.Stray // failed redials are in Failed
	var why []string
	if cfg.MaxErrors >= 0 && r.Errors > int64(cfg.MaxErrors) {
		why = append(why, fmt.Sprintf("%d errors (limit %d)", r.Errors, cfg.MaxErrors))
	}
	if cfg.MaxP99 > 0 && r.EndToEnd.P99 > ms(cfg.MaxP99) {
		why = append(why, fmt.Sprintf("p99 %.1fms (limit %v)", r.EndToEnd.P99, cfg.MaxP99))
	}
	if r.HitTimeLimit {
		why = append(why, "hit the time limit")
	}
	if r.Joined < r.JoinsAsked {
		// Refused joins (a server's room-creation budget, say) would
		// leave a lighter load than the one asked for, and its figures
		// would pass for the load's.
		w := fmt.Sprintf("%d of %d clients joined their rooms", r.Joined, r.JoinsAsked)
		if r.JoinRefusal != "" {
			w += " (the first refusal: " + r.JoinRefusal + ")"
		}
		why = append(why, w)
	}
	r.Passed = len(why) == 0
	r.Verdict = "passed"
	if !r.Passed {
		r.Verdict = "failed: " + strings.Join(why, ", ")
	}
}

// WriteText writes a human-readable summary.
func (r *Result) WriteText(w io.Writer) {
	fmt.Fprintf(w, "scenario %s: %d clients to %v\n", r.Scenario, r.Clients, r.Targets)
	fmt.Fprintf(w, "connected   %d in %.2fs (%.0f/s), failed %d\n", r.Connected, r.ConnectSeconds, r.ConnectRate, r.Failed)
	fmt.Fprintf(w, "connect     p50 %.1fms  p90 %.1fms  p99 %.1fms  max %.1fms\n",
		r.ConnectLatency.P50, r.ConnectLatency.P90, r.ConnectLatency.P99, r.ConnectLatency.Max)
	for _, k := range sortedKeys(r.Failures) {
		fmt.Fprintf(w, "  failed: %-40s %d\n", k, r.Failures[k])
	}
	fmt.Fprintf(w, "held        %d open at the end\n", r.OpenAtEnd)
	if r.MessagesReceived > 0 {
		fmt.Fprintf(w, "wire in     %.1f MB, %.0f B per message received", float64(r.WireBytesIn)/1e6, r.WireBytesPerMsg)
		if r.DeflateClients > 0 {
			fmt.Fprintf(w, "; permessage-deflate with %d clients, %d messages compressed", r.DeflateClients, r.CompressedIn)
		}
		fmt.Fprintln(w)
	}
	for _, k := range sortedKeys(r.ClosedByServer) {
		fmt.Fprintf(w, "  lost: %-42s %d\n", k, r.ClosedByServer[k])
	}
	if isChat(r.Scenario) {
		fmt.Fprintf(w, "chat        %d of %d joined rooms of %d; sent %d messages in %.1fs\n", r.Joined, r.JoinsAsked, r.RoomSize, r.MessagesSent, r.SendSeconds)
		fmt.Fprintf(w, "delivered   %d of %d (missing %d, duplicated %d, out of order %d, from another room %d)\n",
			r.Delivered, r.Expected, r.Missing, r.Duplicated, r.OutOfOrder, r.Stray)
		if r.Retried > 0 {
			fmt.Fprintf(w, "retried     %d messages answered not_delivered, said again under their id\n", r.Retried)
		}
		fmt.Fprintf(w, "throughput  %.0f deliveries/s\n", r.DeliveriesPerSec)
		fmt.Fprintf(w, "end to end  p50 %.1fms  p90 %.1fms  p99 %.1fms  p99.9 %.1fms  max %.1fms\n",
			r.EndToEnd.P50, r.EndToEnd.P90, r.EndToEnd.P99, r.EndToEnd.P999, r.EndToEnd.Max)
		for _, k := range sortedKeys(r.ReconnectRetries) {
			fmt.Fprintf(w, "  reconnect attempt failed: %-27s %d\n", k, r.ReconnectRetries[k])
		}
		if r.Reconnects > 0 {
			fmt.Fprintf(w, "reconnect   %d clients closed by the server came back, %d resumed their room, %d messages resent; close to rejoin p50 %.1fms p99 %.1fms max %.1fms (of which reconnecting p50 %.1fms p99 %.1fms)\n",
				r.Reconnects, r.Resumed, r.Resent, r.ReconnectLatency.P50, r.ReconnectLatency.P99, r.ReconnectLatency.Max,
				r.RedialLatency.P50, r.RedialLatency.P99)
		}
		if f := r.Flood; f != nil {
			fmt.Fprintf(w, "flood       %d flooders sending %s (%d B): %d frames, %.1f MB taken by their sockets; %d connects, %d closed by the server\n",
				f.Flooders, f.Kind, f.Size, f.Frames, float64(f.Bytes)/1e6, f.Connects, f.ClosedByServer)
			for _, k := range sortedKeys(f.Refused) {
				fmt.Fprintf(w, "  flooder refused: %-33s %d\n", k, f.Refused[k])
			}
			if f.ServerPeakRSSBytes > 0 {
				fmt.Fprintf(w, "server peak RSS %.1f MB during the flood (sampled every 100 ms)\n", float64(f.ServerPeakRSSBytes)/1e6)
			}
		}
		if r.Scenario == ScenarioChurn {
			fmt.Fprintf(w, "churn       %d reconnections, %d failed; connect p50 %.1fms p99 %.1fms\n",
				r.ChurnCycles, r.ChurnFailures, r.ChurnLatency.P50, r.ChurnLatency.P99)
		}
	}
	if r.Scenario == ScenarioBurst {
		fmt.Fprintf(w, "sent        %d messages; delivered %d of %d in time, %d late (after the round's timeout), %d missing (never came); duplicated %d, out of order %d\n",
			r.MessagesSent, r.Delivered, r.Expected, r.Late, r.Missing, r.Duplicated, r.OutOfOrder)
		for i, rd := range r.Rounds {
			fmt.Fprintf(w, "  round %d: %d deliveries to %d clients in %.3fs: %.0f deliveries/s; %d late, %d missing\n",
				i+1, rd.Deliveries, rd.Recipients, rd.Seconds, rd.DeliveriesPerSec, rd.Late, rd.Missing)
		}
		fmt.Fprintf(w, "throughput  %.0f deliveries/s over all rounds\n", r.DeliveriesPerSec)
		fmt.Fprintf(w, "end to end  p50 %.1fms  p90 %.1fms  p99 %.1fms  p99.9 %.1fms  max %.1fms\n",
			r.EndToEnd.P50, r.EndToEnd.P90, r.EndToEnd.P99, r.EndToEnd.P999, r.EndToEnd.Max)
	}
	if sg := r.Siege; sg != nil {
		fmt.Fprintf(w, "siege       %d idle clients and %d never-upgraded sockets from %d addresses for %.1fs\n", sg.Clients, sg.IdleSockets, sg.Sources, r.Seconds)
		fmt.Fprintf(w, "  clients:  %d upgrades, %d held at the end (peak %d)\n", sg.Upgrades, sg.ClientsHeld, sg.ClientsPeak)
		for _, k := range sortedKeys(sg.ClosedByServer) {
			fmt.Fprintf(w, "    ended: %-40s %d\n", k, sg.ClosedByServer[k])
		}
		for _, k := range sortedKeys(sg.Refused) {
			fmt.Fprintf(w, "    refused: %-38s %d\n", k, sg.Refused[k])
		}
		fmt.Fprintf(w, "  sockets:  %d connected, %d held at the end, %d dropped by the server, %d connects failed\n",
			sg.SocketsOpened, sg.SocketsHeld, sg.SocketsDropped, sg.SocketsRefused)
	}
	fmt.Fprintf(w, "client RSS  %.1f MB (%.0f B per connection)\n", float64(r.ClientRSSBytes)/1e6, r.ClientRSSPerConn)
	fmt.Fprintf(w, "client CPU  %.2fs\n", r.ClientCPUSeconds)
	if r.ServerRSSBytes > 0 {
		fmt.Fprintf(w, "server RSS  %.1f MB (%.0f B per connection, whole process)\n", float64(r.ServerRSSBytes)/1e6, r.ServerRSSPerConn)
	}
	if r.ServerCPUSeconds > 0 {
		fmt.Fprintf(w, "server CPU  %.2fs\n", r.ServerCPUSeconds)
	}
	if r.Workers > 1 {
		fmt.Fprintf(w, "workers     %d processes\n", r.Workers)
	}
	fmt.Fprintf(w, "verdict     %s\n", r.Verdict)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
