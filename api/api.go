// Package api is Parley's server API for backends: JSON over HTTP,
// authenticated by an API key, acting on the chat of the whole cluster
// (publish to a room, DM a user, disconnect, ban, mute, invite, read a
// room's presence and history, read node and cluster stats). docs/API.md
// lists every call.
//
// The key is compared in constant time (as SHA-256 digests, so its length
// is not told either). Request bodies are small JSON objects decoded
// strictly: an unknown field, a duplicate key or a wrong type is a 400
// naming it.
package api

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/strictjson"
	"github.com/parleyhq/parley/protocol"
)

// Prefix is where the API's routes live.
const Prefix = "/api/v1/"

// MinKeyLength is the shortest API key accepted, in bytes.
const MinKeyLength = 16

// maxBody bounds a request's body: far above any valid call's (a text is
// at most chat's MaxTextLength), and under the engine's 64 KiB request
// limit, so that the API says 413 on either listener.
const maxBody = 32 << 10

// maxDuration bounds a ban's, mute's or invitation's duration.
const maxDuration = 10 * 365 * 24 * time.Hour

// Config configures the API.
type Config struct {
	// Key is the secret callers send as "Authorization: Bearer <key>":
	// at least MinKeyLength bytes. Required.
	Key string
	// NodeStats, if set, adds the node's own figures (the engine's, say)
	// to GET /api/v1/stats.
	NodeStats func() any
	// Logger receives the API's logs. Default slog.Default().
	Logger *slog.Logger
}

// Server serves the API. Create it with New.
type Server struct {
	cfg   Config
	hub   *chat.Hub
	key   [sha256.Size]byte
	mux   *http.ServeMux
	log   *slog.Logger
	mu    sync.Mutex
	hits  map[Hit]uint64
	fails keyGuard
}

// Hit is a route and a status, as counted by Stats.
type Hit struct {
	Route  string // the route's pattern, e.g. "POST /api/v1/rooms/{room}/messages"
	Status int
}

// New returns the API of hub.
func New(cfg Config, hub *chat.Hub) (*Server, error) {
	if len(cfg.Key) < MinKeyLength {
		return nil, fmt.Errorf("api: Key: %d bytes, want at least %d", len(cfg.Key), MinKeyLength)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, hub: hub, key: sha256.Sum256([]byte(cfg.Key)), mux: http.NewServeMux(),
		log: cfg.Logger, hits: make(map[Hit]uint64)}
	// Each path is registered without its methods, so that a known path
	// asked with another method gets a JSON 405 (after the key check)
	// rather than ServeMux's text one.
	byPath := map[string]map[string]http.Handler{}
	var paths []string
	for _, rt := range s.routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		if byPath[path] == nil {
			byPath[path] = map[string]http.Handler{}
			paths = append(paths, path)
		}
		byPath[path][method] = s.call(rt.pattern, rt.f)
	}
	for _, path := range paths {
		methods := byPath[path]
		s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if h := methods[r.Method]; h != nil {
				h.ServeHTTP(w, r)
				return
			}
			s.refuse(w, r, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not a call on "+path)
		})
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.refuse(w, r, http.StatusNotFound, "not_found", "no such call: "+r.Method+" "+r.URL.Path)
	})
	return s, nil
}

// refuse answers a request that names no call, after the key check;
// they are counted under route "/".
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if !s.admit(w, r, "/") {
		return
	}
	s.count("/", status)
	writeJSON(w, status, errorBody{Error: msg, Code: code})
}

// route is a call: its pattern and its function.
type route struct {
	pattern string
	f       func(*http.Request) (any, error)
}

func (s *Server) routes() []route {
	return []route{
		{"POST /api/v1/rooms/{room}/messages", s.publish},
		{"DELETE /api/v1/rooms/{room}/messages/{seq}", s.deleteMessage},
		{"GET /api/v1/rooms/{room}/history", s.history},
		{"GET /api/v1/rooms/{room}/search", s.search},
		{"GET /api/v1/rooms", s.rooms},
		{"GET /api/v1/rooms/{room}/presence", s.presence},
		{"POST /api/v1/users/{user}/messages", s.dm},
		{"POST /api/v1/users/{user}/disconnect", s.disconnect},
		{"PUT /api/v1/bans/users/{user}", s.putRule(chat.RuleBanUser)},
		{"DELETE /api/v1/bans/users/{user}", s.deleteRule(chat.RuleBanUser)},
		{"PUT /api/v1/bans/addrs/{addr...}", s.putRule(chat.RuleBanAddr)},
		{"DELETE /api/v1/bans/addrs/{addr...}", s.deleteRule(chat.RuleBanAddr)},
		{"PUT /api/v1/rooms/{room}/mutes/{user}", s.putRule(chat.RuleMute)},
		{"DELETE /api/v1/rooms/{room}/mutes/{user}", s.deleteRule(chat.RuleMute)},
		{"PUT /api/v1/rooms/{room}/invitations/{user}", s.putRule(chat.RuleInvite)},
		{"DELETE /api/v1/rooms/{room}/invitations/{user}", s.deleteRule(chat.RuleInvite)},
		{"GET /api/v1/rules", s.rules},
		{"GET /api/v1/stats", s.stats},
	}
}

// Routes lists the API's route patterns ("METHOD /path/{param}").
func (s *Server) Routes() []string {
	var out []string
	for _, rt := range s.routes() {
		out = append(out, rt.pattern)
	}
	return out
}

// Handler returns the API's handler, for requests under Prefix.
func (s *Server) Handler() http.Handler { return s.mux }

// Stats returns how many calls each route answered with each status
// (route "/" for paths that name no call, and refusals before routing).
func (s *Server) Stats() map[Hit]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[Hit]uint64, len(s.hits))
	for k, v := range s.hits {
		out[k] = v
	}
	return out
}

func (s *Server) count(route string, status int) {
	s.mu.Lock()
	s.hits[Hit{route, status}]++
	s.mu.Unlock()
}

// authorized checks the request's key in constant time.
func (s *Server) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], s.key[:]) == 1 && ok
}

func (s *Server) unauthorized(w http.ResponseWriter, route string) {
	s.count(route, http.StatusUnauthorized)
	w.Header().Set("WWW-Authenticate", `Bearer realm="parley-api"`)
	writeJSON(w, http.StatusUnauthorized, errorBody{Error: "an API key is required: Authorization: Bearer <key>", Code: "unauthorized"})
}

// errorBody is every error's answer.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// apiError is an error with its status.
type apiError struct {
	status int
	code   string
	err    error
}

func (e *apiError) Error() string { return e.err.Error() }

func badRequest(format string, a ...any) error {
	return &apiError{http.StatusBadRequest, "bad_request", fmt.Errorf(format, a...)}
}

// call wraps a route's function: key check, body limit, answer and
// counting.
func (s *Server) call(route string, f func(*http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.admit(w, r, route) {
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		out, err := f(r)
		status := http.StatusOK
		if err != nil {
			var ae *apiError
			var mbe *http.MaxBytesError
			switch {
			case errors.As(err, &ae):
			case errors.As(err, &mbe):
				ae = &apiError{http.StatusRequestEntityTooLarge, "too_large", fmt.Errorf("the body is over %d bytes", maxBody)}
			case errors.Is(err, chat.ErrInvalid):
				ae = &apiError{http.StatusBadRequest, "bad_request", err}
			case errors.Is(err, chat.ErrNoMessage):
				ae = &apiError{http.StatusNotFound, "not_found", err}
			case errors.Is(err, chat.ErrRuleLimit):
				ae = &apiError{http.StatusInsufficientStorage, "rule_limit", err}
			case errors.Is(err, chat.ErrBrokerNotRunning):
				ae = &apiError{http.StatusServiceUnavailable, "unavailable", err}
			default:
				ae = &apiError{http.StatusServiceUnavailable, "unavailable", err}
				s.log.Warn("an API call failed", "route", route, "err", err)
			}
			status = ae.status
			out = errorBody{Error: ae.err.Error(), Code: ae.code}
		}
		s.count(route, status)
		writeJSON(w, status, out)
	})
}

// writeJSON answers v as JSON, without escaping <, > and & (answers are
// read in curl, not pasted into HTML; the Content-Type says JSON).
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"encoding the answer failed","code":"internal"}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// decode reads the request's JSON body into v strictly; an empty body is
// an empty object.
func decode(r *http.Request, v any) error {
	var buf strings.Builder
	if _, err := io.Copy(&buf, r.Body); err != nil {
		return err
	}
	body := strings.TrimSpace(buf.String())
	if body == "" {
		body = "{}"
	}
	if err := strictjson.Decode([]byte(body), v); err != nil {
		return badRequest("body: %v", err)
	}
	return nil
}

// ok is the answer of a call that returns nothing else.
type ok struct {
	OK bool `json:"ok"`
}

// sender is who a message is from: the system, or a user.
type sender struct {
	User string `json:"user,omitempty"`
	Nick string `json:"nick,omitempty"`
}

// message reads a publish's or a DM's body: its text, and who it is from
// (the system when from is left out).
func message(r *http.Request) (string, chat.Sender, error) {
	var body struct {
		Text string  `json:"text"`
		From *sender `json:"from,omitempty"`
	}
	if err := decode(r, &body); err != nil {
		return "", chat.Sender{}, err
	}
	var from chat.Sender
	if body.From != nil {
		from = chat.Sender{ID: body.From.User, Nick: body.From.Nick}
		if from.ID == "" {
			return "", chat.Sender{}, badRequest("from: a user id is required (leave from out for the system)")
		}
	}
	return body.Text, from, nil
}

func (s *Server) publish(r *http.Request) (any, error) {
	text, from, err := message(r)
	if err == nil {
		err = s.hub.Publish(r.Context(), r.PathValue("room"), text, from)
	}
	if err != nil {
		return nil, err
	}
	return ok{true}, nil
}

func (s *Server) deleteMessage(r *http.Request) (any, error) {
	v := r.PathValue("seq")
	seq, err := strconv.ParseInt(v, 10, 64)
	if err != nil || seq < 1 {
		return nil, badRequest("message %q: want a sequence number (1 or more)", v)
	}
	if err := s.hub.DeleteMessage(r.Context(), r.PathValue("room"), seq); err != nil {
		return nil, err
	}
	return ok{true}, nil
}

// rooms lists the rooms, private ones included (the backend sees all).
func (s *Server) rooms(r *http.Request) (any, error) {
	q := r.URL.Query()
	limit, err := positive("limit", q.Get("limit"))
	if err != nil {
		return nil, err
	}
	list, next, err := s.hub.Rooms(q.Get("q"), q.Get("after"), limit, func(string) bool { return true })
	if err != nil {
		return nil, err
	}
	if list == nil {
		list = []protocol.RoomInfo{}
	}
	return struct {
		Rooms []protocol.RoomInfo `json:"rooms"`
		Next  string              `json:"next,omitempty"`
	}{list, next}, nil
}

func (s *Server) search(r *http.Request) (any, error) {
	q := r.URL.Query()
	limit, err := positive("limit", q.Get("limit"))
	if err != nil {
		return nil, err
	}
	before, err := positive("before", q.Get("before"))
	if err != nil {
		return nil, err
	}
	return s.hub.Search(r.Context(), r.PathValue("room"), q.Get("q"), int64(before), limit)
}

// positive parses the optional positive number v of parameter name
// ("": 0).
func positive(name, v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, badRequest("%s %q: want a positive number", name, v)
	}
	return n, nil
}

func (s *Server) dm(r *http.Request) (any, error) {
	text, from, err := message(r)
	if err == nil {
		err = s.hub.SendDM(r.Context(), r.PathValue("user"), text, from)
	}
	if err != nil {
		return nil, err
	}
	return ok{true}, nil
}

func (s *Server) disconnect(r *http.Request) (any, error) {
	body := struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}{}
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	code := engine.StatusCode(body.Code)
	if code == 0 {
		code = engine.StatusCode(protocol.CloseDisconnected)
	}
	if body.Reason == "" {
		body.Reason = "disconnected by the server"
	}
	if err := s.hub.Disconnect(r.PathValue("user"), code, body.Reason); err != nil {
		return nil, err
	}
	return ok{true}, nil
}

// ruleBody is the body of a PUT of a ban, mute or invitation.
type ruleBody struct {
	Duration string `json:"duration"` // a Go duration: "90s", "1h", "720h"
	Reason   string `json:"reason,omitempty"`
	// Force puts an address ban wider than MinBanBits4/MinBanBits6 in
	// force (0.0.0.0/0 bans everyone, the backend included).
	Force bool `json:"force,omitempty"`
}

// The widest address bans put without "force": an IPv4 /8 (16M
// addresses), an IPv6 /16. A wider one is most likely a typo, and
// 0.0.0.0/0 turns everyone away.
const (
	MinBanBits4 = 8
	MinBanBits6 = 16
)

// tooWide refuses an address ban wider than MinBanBits4/6 unless forced.
func tooWide(subject string, force bool) error {
	p, err := netip.ParsePrefix(subject)
	if err != nil || force {
		return nil // an address, or forced (chat checks the form)
	}
	least := MinBanBits4
	if p.Addr().Is6() && !p.Addr().Is4In6() {
		least = MinBanBits6
	}
	if p.Bits() < least {
		return badRequest("a ban of %s covers %s: at most a /%d is banned without \"force\": true", subject, coverage(p), least)
	}
	return nil
}

// coverage says how much of its address space p covers.
func coverage(p netip.Prefix) string {
	if p.Bits() == 0 {
		return "every address"
	}
	return fmt.Sprintf("1/%d of every address", uint64(1)<<p.Bits())
}

// RuleAnswer answers a rule's PUT: the rule as put in force.
type RuleAnswer struct {
	Rule  chat.Rule `json:"rule"`
	Until string    `json:"until"` // RFC 3339
}

// ruleOf reads the rule a route names.
func ruleOf(kind string, r *http.Request) chat.Rule {
	rule := chat.Rule{Kind: kind, Room: r.PathValue("room"), Subject: r.PathValue("user")}
	if kind == chat.RuleBanAddr {
		rule.Subject = r.PathValue("addr")
	}
	return rule
}

func (s *Server) putRule(kind string) func(*http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		var body ruleBody
		if err := decode(r, &body); err != nil {
			return nil, err
		}
		d, err := time.ParseDuration(body.Duration)
		if err != nil || d <= 0 || d > maxDuration {
			return nil, badRequest("duration %q: want a positive Go duration (\"90s\", \"1h\") of at most %v", body.Duration, maxDuration)
		}
		rule := ruleOf(kind, r)
		if body.Force && kind != chat.RuleBanAddr {
			return nil, badRequest("force is for address bans only")
		}
		if kind == chat.RuleBanAddr {
			if err := tooWide(rule.Subject, body.Force); err != nil {
				return nil, err
			}
		}
		rule.Until, rule.Reason = time.Now().Add(d).UnixMilli(), body.Reason
		if err := s.hub.PutRule(r.Context(), rule); err != nil {
			return nil, err
		}
		return RuleAnswer{Rule: rule, Until: time.UnixMilli(rule.Until).UTC().Format(time.RFC3339)}, nil
	}
}

func (s *Server) deleteRule(kind string) func(*http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		if err := s.hub.DeleteRule(r.Context(), ruleOf(kind, r)); err != nil {
			return nil, err
		}
		return ok{true}, nil
	}
}

func (s *Server) rules(r *http.Request) (any, error) {
	kind := r.URL.Query().Get("kind")
	switch kind {
	case "", chat.RuleBanUser, chat.RuleBanAddr, chat.RuleMute, chat.RuleInvite:
	default:
		return nil, badRequest("kind %q: want ban_user, ban_addr, mute or invite", kind)
	}
	rules := s.hub.Rules(kind)
	slices.SortFunc(rules, func(a, b chat.Rule) int { return strings.Compare(a.Key(), b.Key()) })
	return struct {
		Rules []chat.Rule `json:"rules"`
	}{rules}, nil
}

func (s *Server) presence(r *http.Request) (any, error) {
	return s.hub.Presence(r.Context(), r.PathValue("room"))
}

func (s *Server) history(r *http.Request) (any, error) {
	limit, err := positive("limit", r.URL.Query().Get("limit"))
	if err != nil {
		return nil, err
	}
	msgs, err := s.hub.History(r.Context(), r.PathValue("room"), limit)
	if err != nil {
		return nil, err
	}
	return struct {
		Room     string            `json:"room"`
		Messages []json.RawMessage `json:"messages"`
	}{r.PathValue("room"), msgs}, nil
}

// StatsAnswer answers GET /api/v1/stats.
type StatsAnswer struct {
	Node    string          `json:"node"`
	Chat    chat.Stats      `json:"chat"`
	Engine  any             `json:"engine,omitempty"`
	Cluster []chat.NodeInfo `json:"cluster"`
	// Totals over the cluster's live nodes.
	Clients int `json:"clients"`
	Users   int `json:"users"`
}

func (s *Server) stats(*http.Request) (any, error) {
	nodes := s.hub.Nodes()
	a := StatsAnswer{Chat: s.hub.Stats(), Cluster: nodes}
	if len(nodes) > 0 {
		a.Node = nodes[0].Node
	}
	if s.cfg.NodeStats != nil {
		a.Engine = s.cfg.NodeStats()
	}
	for _, n := range nodes {
		a.Clients += n.Clients
		a.Users += n.Users
	}
	return a, nil
}
