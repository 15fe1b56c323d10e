package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/internal/wstest"
	"github.com/parleyhq/parley/metrics"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// node is a chat server with metrics on /metrics of its main listener.
type node struct {
	srv *engine.Server
	hub *chat.Hub
	m   *metrics.Metrics
	url string
}

func startNode(t *testing.T, ccfg chat.Config, ecfg engine.Config) *node {
	t.Helper()
	ccfg.Logger = testserver.Logger()
	hub, err := chat.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{hub: hub}
	n.srv, n.url = testserver.Start(t, ecfg, hub, func(srv *engine.Server) {
		m, err := metrics.New(metrics.Config{Build: metrics.Build{Version: "v9.9.9", Revision: "abc123"}}, metrics.Sources{
			Engine: srv.Stats,
			Chat: func() metrics.ChatStats {
				st := hub.Stats()
				return metrics.ChatStats{Rooms: st.Rooms, Members: st.Members, Published: st.Published, Received: st.Received,
					DMs: st.DMs, RateLimited: st.RateLimited, PresenceChanges: st.PresenceChanges,
					PresenceSent: st.PresenceSent, Errors: st.Errors, Users: st.Users, Refused: st.Refused, Dropped: st.Dropped}
			},
			Broker: fakeBroker, // a cluster's, so lint and the dashboard check see those metrics too
			API: func() []metrics.APIHit {
				return []metrics.APIHit{{Route: "GET /api/v1/stats", Status: 200, Count: 3}, {Route: "GET /api/v1/stats", Status: 401, Count: 2}}
			},
			Memory: func() metrics.MemoryStats { return metrics.MemoryStats{Trims: 30, FreedBytes: 31 << 20} },
		})
		if err != nil {
			t.Fatal(err)
		}
		n.m = m
		if err := srv.Handle("/metrics", m.Handler()); err != nil {
			t.Fatal(err)
		}
	})
	return n
}

// scrape fetches /metrics over HTTP and returns sample values by series,
// e.g. `parley_connections` or `parley_handshakes_refused_total{reason="origin"}`.
func (n *node) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.srv.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			key := name
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
			default:
				out[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

func dial(t *testing.T, url string, hdr http.Header) *wstest.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := wstest.Dial(ctx, url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// readN reads n data messages.
func readN(t *testing.T, c *wstest.Conn, n int) {
	t.Helper()
	for range n {
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestScrapeAfterKnownTraffic runs known traffic and checks the exact
// values /metrics reports.
func TestScrapeAfterKnownTraffic(t *testing.T) {
	// No presence flush during the test (an hour-long interval), so every
	// delivery is accounted for below.
	n := startNode(t, chat.Config{PresenceInterval: time.Hour}, engine.Config{})
	const clients, each = 5, 3
	var cs []*wstest.Conn
	for range clients {
		c := dial(t, n.url, nil)
		readN(t, c, 3) // welcome, join, history
		cs = append(cs, c)
	}
	// Refused and malformed upgrades.
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _, err := wstest.Dial(ctx, n.url, http.Header{"Origin": {"https://evil.example"}})
		cancel()
		if err == nil {
			t.Fatal("foreign origin accepted")
		}
	}
	resp, err := http.Get("http://" + n.srv.Addr().String() + "/ws") // no Upgrade: 426
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// Each client says `each` plain-text messages of 5 bytes in the lobby.
	for _, c := range cs {
		for range each {
			if err := c.WriteText("hello"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range cs {
		readN(t, c, clients*each)
	}
	msgs := float64(clients * each)
	// A write is counted once it returned: the client may read its frames
	// first (on a busy machine, 84 of 90 deliveries were counted then).
	var got map[string]float64
	poll.Until(t, "every delivery counted", func() bool {
		got = n.scrape(t)
		return got["parley_deliveries_total"] >= clients*3+msgs*clients
	})
	want := map[string]float64{
		"parley_connections":                                      clients,
		"parley_connections_accepted_total":                       clients,
		`parley_handshakes_refused_total{reason="origin"}`:        2,
		`parley_handshakes_refused_total{reason="malformed"}`:     1,
		`parley_handshakes_refused_total{reason="limit"}`:         0,
		`parley_handshakes_refused_total{reason="network"}`:       0,
		"parley_connections_evicted_total":                        0,
		`parley_handshakes_refused_total{reason="token_missing"}`: 0,
		"parley_messages_received_total":                          msgs,
		"parley_received_frames_total":                            msgs,
		"parley_received_bytes_total":                             msgs * (2 + 4 + 5), // header, mask, payload
		"parley_deliveries_total":                                 clients*3 + msgs*clients,
		"parley_frames_encoded_total":                             clients*3 + msgs,
		"parley_rooms":                                            1,
		"parley_room_members":                                     clients,
		"parley_broker_published_total":                           msgs,
		"parley_broker_received_total":                            msgs,
		"parley_presence_changes_total":                           clients,
		"parley_presence_messages_total":                          0,
		"parley_slow_consumers_closed_total":                      0,
		"parley_dispatch_delay_seconds_count":                     msgs,
		`parley_build_info{goversion="` + goVersion(got) + `",revision="abc123",version="v9.9.9"}`: 1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	// Sent frames and writes: every delivery is a frame, and writes carry
	// the 101s plus at least one frame each.
	if got["parley_sent_frames_total"] != want["parley_deliveries_total"] ||
		got["parley_writes_total"] > got["parley_sent_frames_total"]+clients ||
		got["parley_write_batch_frames_count"] != got["parley_writes_total"] {
		t.Errorf("frames %v writes %v batches %v", got["parley_sent_frames_total"], got["parley_writes_total"],
			got["parley_write_batch_frames_count"])
	}

	// Everyone leaves with a normal close: counters stay, gauges drop.
	for _, c := range cs {
		_ = c.WriteClose(1000, "bye")
	}
	poll.Until(t, "every client gone", func() bool { return n.srv.Stats().Clients == 0 })
	got = n.scrape(t)
	for k, v := range map[string]float64{
		"parley_connections": 0, `parley_connections_closed_total{code="normal"}`: clients,
		"parley_messages_received_total": msgs, "parley_received_bytes_total": msgs*11 + clients*(2+4+5),
		"parley_room_members": 0, "parley_presence_changes_total": 2 * clients,
	} {
		if got[k] != v {
			t.Errorf("after the clients left: %s = %v, want %v", k, got[k], v)
		}
	}
}

func goVersion(got map[string]float64) string {
	for k := range got {
		if m := regexp.MustCompile(`^parley_build_info\{goversion="([^"]+)"`).FindStringSubmatch(k); m != nil {
			return m[1]
		}
	}
	return ""
}

// TestSlowConsumerInMetrics: a client that stops reading while another
// floods the lobby is closed (policy) and counted.
func TestSlowConsumerInMetrics(t *testing.T) {
	n := startNode(t, chat.Config{RateLimit: -1, PresenceInterval: time.Hour}, engine.Config{
		SendQueueSoftLimit: 32 << 10, SendQueueHardLimit: 1 << 20, SocketWriteBuffer: 16 << 10,
		SlowConsumerTimeout: 200 * time.Millisecond, CloseTimeout: 200 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	slow, _, err := wstest.DialWith(ctx, wstest.SmallReceiveBuffer(4<<10), n.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	flooder := dial(t, n.url, nil)
	readN(t, flooder, 3)
	big := strings.Repeat("x", 1900)
	go func() { // the flooder's own copies must be read, or it backs up too
		for {
			if _, _, err := flooder.ReadMessage(); err != nil {
				return
			}
		}
	}()
	for range 400 {
		if err := flooder.WriteText(big); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, "the slow consumer closed", func() bool { return n.srv.Stats().ClosedSlow > 0 })
	got := n.scrape(t)
	if got["parley_slow_consumers_closed_total"] != 1 {
		t.Fatalf("parley_slow_consumers_closed_total = %v, want 1", got["parley_slow_consumers_closed_total"])
	}
	poll.Until(t, "its close counted", func() bool { return n.scrape(t)[`parley_connections_closed_total{code="policy"}`] == 1 })
	if v := n.scrape(t)[`parley_connections_closed_total{code="policy"}`]; v != 1 {
		t.Fatalf(`closed{code="policy"} = %v, want 1`, v)
	}
}

// fakeBroker is a cluster broker's counters, each a different value.
func fakeBroker() metrics.BrokerStats {
	return metrics.BrokerStats{Connected: true, Nodes: 6, Published: 1, PublishErrors: 2, Received: 3, Repaired: 4,
		Lost: 5, Duplicates: 6, PresenceReceived: 7, DirectReceived: 8, Resets: 9, NodesGone: 10, SlowConsumer: 11,
		Reconnects: 12, Disconnects: 13, LagBounds: []float64{0.001, 0.01}, LagCounts: []uint64{5, 3, 2}, LagSum: 0.5,
		ControlReceived: 14, Recreated: 15, DroppedBeats: 16, DroppedRules: 17, StreamsDeleted: 18, Stalls: 19,
		PublishRetries: 20, PublishTimeouts: 21, BufferFull: 22, Overtaken: 23, BufferedBytes: 24, BufferedMsgs: 25, FetchRetries: 26, ProvisionRetries: 27, LateAcks: 28, TailRepairs: 29}
}

// TestBrokerMetrics: a cluster broker's counters, each under its name.
func TestBrokerMetrics(t *testing.T) {
	n := startNode(t, chat.Config{}, engine.Config{})
	got := n.scrape(t)
	for name, want := range map[string]float64{
		"parley_nats_connected": 1, "parley_cluster_nodes": 6, "parley_nats_published_total": 1,
		"parley_nats_publish_errors_total": 2, "parley_nats_received_total": 3, "parley_nats_repaired_total": 4,
		"parley_nats_lost_total": 5, "parley_nats_duplicates_total": 6, "parley_nats_presence_received_total": 7,
		"parley_nats_direct_received_total": 8, "parley_nats_room_resets_total": 9, "parley_nats_nodes_gone_total": 10,
		"parley_nats_slow_consumer_total": 11, "parley_nats_reconnects_total": 12, "parley_nats_disconnects_total": 13,
		"parley_nats_lag_seconds_count": 10, "parley_broker_publish_failed_total": 0,
		"parley_nats_control_received_total": 14, "parley_nats_streams_recreated_total": 15, "parley_nats_streams_deleted_total": 18, "parley_nats_stalls_total": 19,
		"parley_nats_publish_retries_total": 20, "parley_nats_publish_timeouts_total": 21, "parley_nats_buffer_full_total": 22,
		"parley_nats_overtaken_total": 23, "parley_nats_buffered_bytes": 24, "parley_nats_buffered_messages": 25, "parley_nats_fetch_retries_total": 26, "parley_nats_provision_retries_total": 27, "parley_nats_late_acks_total": 28, "parley_nats_tail_repairs_total": 29,
		`parley_bus_dropped_total{kind="heartbeat"}`: 16, `parley_bus_dropped_total{kind="rule"}`: 17,
		`parley_bus_dropped_total{kind="message"}`:                          0,
		`parley_api_requests_total{route="GET /api/v1/stats",status="200"}`: 3,
		`parley_api_requests_total{route="GET /api/v1/stats",status="401"}`: 2,
		"parley_memory_trims_total":                                         30, "parley_memory_trimmed_bytes_total": 31 << 20,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
}

// TestLint runs client_golang's promlint over the exposition.
func TestLint(t *testing.T) {
	n := startNode(t, chat.Config{}, engine.Config{})
	problems, err := testutil.GatherAndLint(n.m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "parley_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// TestDashboardQueriesExist checks every metric the Grafana dashboard
// queries is exposed.
func TestDashboardQueriesExist(t *testing.T) {
	n := startNode(t, chat.Config{}, engine.Config{})
	families, err := n.m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range families {
		have[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				have[f.GetName()+s] = true
			}
		}
	}
	b, err := os.ReadFile("../deploy/grafana/parley.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	name := regexp.MustCompile(`\b(?:parley|process|go)_[a-z_]+\b`)
	var checked int
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				checked++
				if !have[m] {
					t.Errorf("panel %q queries %s, which is not exposed", p.Title, m)
				}
			}
		}
	}
	if checked < 30 {
		t.Fatalf("only %d metric references found in the dashboard", checked)
	}
}

// TestRefusalsByReason: the chat's handshake refusals appear under their
// reasons, and the engine's total of the application's is not told
// beside them (it would count each twice).
func TestRefusalsByReason(t *testing.T) {
	is := authtest.New(t)
	n := startNode(t, chat.Config{Verifier: is.Verifier()}, engine.Config{})
	for _, q := range []string{"", "?access_token=x.y.z", "?access_token=" + is.Token("u1") + "&room=bad%20room"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if c, _, err := wstest.Dial(ctx, n.url+q, nil); err == nil {
			c.Close()
			t.Fatalf("dial %q: upgraded", q)
		}
		cancel()
	}
	got := n.scrape(t)
	for series, want := range map[string]float64{
		`parley_handshakes_refused_total{reason="token_missing"}`:  1,
		`parley_handshakes_refused_total{reason="token_invalid"}`:  1,
		`parley_handshakes_refused_total{reason="bad_request"}`:    1,
		`parley_handshakes_refused_total{reason="banned"}`:         0,
		`parley_handshakes_refused_total{reason="forbidden_room"}`: 0,
		`parley_users`: 0,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	if _, ok := got[`parley_handshakes_refused_total{reason="application"}`]; ok {
		t.Error(`reason="application" beside the chat's reasons`)
	}
}
