package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/internal/testserver"
	"github.com/parleyhq/parley/protocol"
)

func TestMain(m *testing.M) { testserver.Main(m) }

const key = "an-api-key-for-tests-only"

// env is a chat server with the API under /api/v1/.
type env struct {
	t    *testing.T
	hub  *chat.Hub
	api  *api.Server
	base string // http://host:port
	ws   string
	is   *authtest.Issuer
}

// start starts a hub with the API; opts change its config.
func start(t *testing.T, opts ...func(*chat.Config)) *env {
	t.Helper()
	is := authtest.New(t)
	cfg := chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsAllowed, PrivateRooms: []string{"vip"},
		PresenceInterval: 20 * time.Millisecond, Logger: testserver.Logger()}
	for _, o := range opts {
		o(&cfg)
	}
	hub, err := chat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, hub: hub, is: is}
	e.api, err = api.New(api.Config{Key: key, Logger: testserver.Logger(), NodeStats: func() any { return map[string]int{"x": 1} }}, hub)
	if err != nil {
		t.Fatal(err)
	}
	srv, ws := testserver.Start(t, engine.Config{}, hub, func(s *engine.Server) {
		if err := s.Handle("/api/", e.api.Handler()); err != nil {
			t.Fatal(err)
		}
	})
	e.base, e.ws = "http://"+srv.Addr().String(), ws
	return e
}

// call makes a request with the key (or the given Authorization) and
// returns the status and the decoded body.
func (e *env) call(method, path, body string, authz ...string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if len(authz) > 0 {
		req.Header.Set("Authorization", authz[0])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		e.t.Fatalf("%s %s: %d, not JSON: %q", method, path, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	return resp.StatusCode, out
}

func (e *env) must(method, path, body string) map[string]any {
	e.t.Helper()
	status, out := e.call(method, path, body)
	if status != 200 {
		e.t.Fatalf("%s %s: %d %v", method, path, status, out)
	}
	return out
}

// user connects a signed-in client.
func (e *env) user(id string, q ...string) *chattest.Client {
	e.t.Helper()
	v := url.Values{"access_token": {e.is.Token(id)}}
	for i := 0; i+1 < len(q); i += 2 {
		v.Set(q[i], q[i+1])
	}
	c := chattest.Dial(e.t, e.ws+"?"+v.Encode())
	w := c.Expect("welcome")
	c.Nick, c.ID = w.Nick, w.ID
	c.Expect("join")
	c.Expect("history")
	return c
}

// TestRefusals: no key, a wrong key, a key as a query parameter, a bad
// body, an unknown field, a bad duration, an unknown call: each gets its
// status and says why, and is counted.
func TestRefusals(t *testing.T) {
	e := start(t)
	for _, tc := range []struct {
		name, method, path, body, authz string
		status                          int
		want                            string
	}{
		{"no key", "GET", "/api/v1/stats", "", "none", 401, "API key is required"},
		{"wrong key", "GET", "/api/v1/stats", "", "Bearer " + key + "x", 401, "API key"},
		{"a prefix of the key", "GET", "/api/v1/stats", "", "Bearer " + key[:10], 401, "API key"},
		{"not Bearer", "GET", "/api/v1/stats", "", "Basic " + key, 401, "API key"},
		{"no key on an unknown path", "GET", "/api/v1/nope", "", "none", 401, "API key"},
		{"unknown call", "GET", "/api/v1/nope", "", "", 404, "no such call"},
		{"another method", "GET", "/api/v1/rooms/lobby/messages", "", "", 405, "not a call"},
		{"another method without a key", "DELETE", "/api/v1/stats", "", "none", 401, "API key"},
		{"unknown field", "POST", "/api/v1/rooms/lobby/messages", `{"text":"hi","room":"x"}`, "", 400, `body: unknown field "room"`},
		{"duplicate key", "POST", "/api/v1/rooms/lobby/messages", `{"text":"hi","text":"ho"}`, "", 400, `(field "text"): duplicate`},
		{"wrong type", "POST", "/api/v1/rooms/lobby/messages", `{"text":5}`, "", 400, `field "text": want a string, got a number`},
		{"wrong type in an object", "POST", "/api/v1/rooms/lobby/messages", `{"text":"hi","from":5}`, "", 400, `field "from": want an object, got a number`},
		{"not JSON", "POST", "/api/v1/rooms/lobby/messages", `text=hi`, "", 400, `body`},
		{"empty text", "POST", "/api/v1/rooms/lobby/messages", `{"text":" "}`, "", 400, `empty`},
		{"bad room", "POST", "/api/v1/rooms/a%20b/messages", `{"text":"hi"}`, "", 400, `room`},
		{"from without a user", "POST", "/api/v1/rooms/lobby/messages", `{"text":"hi","from":{"nick":"x"}}`, "", 400, `user id is required`},
		{"from a guest- nick", "POST", "/api/v1/rooms/lobby/messages", `{"text":"hi","from":{"user":"u","nick":"guest-1"}}`, "", 400, `guest-`},
		{"too large", "POST", "/api/v1/rooms/lobby/messages", `{"text":"` + strings.Repeat("a", 40<<10) + `"}`, "", 413, `over`},
		{"no duration", "PUT", "/api/v1/bans/users/u1", `{}`, "", 400, `duration`},
		{"negative duration", "PUT", "/api/v1/bans/users/u1", `{"duration":"-1h"}`, "", 400, `duration`},
		{"endless duration", "PUT", "/api/v1/bans/users/u1", `{"duration":"100000h"}`, "", 400, `duration`},
		{"bad address", "PUT", "/api/v1/bans/addrs/localhost", `{"duration":"1h"}`, "", 400, `not an IP`},
		{"address with host bits", "PUT", "/api/v1/bans/addrs/10.0.0.1/8", `{"duration":"1h"}`, "", 400, `bits set`},
		{"a ban of everyone", "PUT", "/api/v1/bans/addrs/0.0.0.0/0", `{"duration":"1h"}`, "", 400, `covers every address`},
		{"a ban of half of IPv4", "PUT", "/api/v1/bans/addrs/0.0.0.0/1", `{"duration":"1h"}`, "", 400, `"force": true`},
		{"a ban of every IPv6 address", "PUT", "/api/v1/bans/addrs/::/0", `{"duration":"1h"}`, "", 400, `covers every address`},
		{"force on a user ban", "PUT", "/api/v1/bans/users/u1", `{"duration":"1h","force":true}`, "", 400, `address bans only`},
		{"disconnect code", "POST", "/api/v1/users/u1/disconnect", `{"code":1000}`, "", 400, `4000-4999`},
		{"history limit", "GET", "/api/v1/rooms/lobby/history?limit=x", "", "", 400, `limit`},
		{"rule kind", "GET", "/api/v1/rules?kind=exile", "", "", 400, `kind`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var status int
			var out map[string]any
			switch tc.authz {
			case "":
				status, out = e.call(tc.method, tc.path, tc.body)
			case "none":
				status, out = e.call(tc.method, tc.path, tc.body, "")
			default:
				status, out = e.call(tc.method, tc.path, tc.body, tc.authz)
			}
			if msg, _ := out["error"].(string); status != tc.status || !strings.Contains(msg, tc.want) {
				t.Fatalf("%d %v, want %d with %q", status, out, tc.status, tc.want)
			}
		})
	}
	hits := e.api.Stats()
	if hits[api.Hit{Route: "GET /api/v1/stats", Status: 401}] != 4 || hits[api.Hit{Route: "/", Status: 404}] != 1 || hits[api.Hit{Route: "/", Status: 405}] != 1 ||
		hits[api.Hit{Route: "PUT /api/v1/bans/users/{user}", Status: 400}] != 4 {
		t.Fatalf("counted: %v", hits)
	}
}

// TestCalls: every call does what it says, on real clients.
func TestCalls(t *testing.T) {
	e := start(t)
	alice, bob := e.user("u-alice"), e.user("u-bob")
	guest := chattest.Connect(t, e.ws)

	// Publish as the system and as a user.
	e.must("POST", "/api/v1/rooms/lobby/messages", `{"text":"maintenance at noon"}`)
	e.must("POST", "/api/v1/rooms/lobby/messages", `{"text":"hello from the shop","from":{"user":"u-shop","nick":"Shop"}}`)
	for _, c := range []*chattest.Client{alice, bob, guest} {
		if m := c.Expect("message"); !m.System || m.From != "system" || m.Text != "maintenance at noon" {
			t.Fatalf("%s: %+v", c.Nick, m)
		}
		if m := c.Expect("message"); m.System || m.From != "Shop" || m.User != "u-shop" {
			t.Fatalf("%s: %+v", c.Nick, m)
		}
	}
	// A moderator's delete: the message leaves the history, every member
	// is told. One the history does not hold is not found.
	e.must("DELETE", "/api/v1/rooms/lobby/messages/2", "")
	for _, c := range []*chattest.Client{alice, bob, guest} {
		if d := c.Expect("deleted"); d.Deletes != 2 || !d.Mod || !d.System || d.From != "system" {
			t.Fatalf("%s: %+v", c.Nick, d)
		}
	}
	if h := e.must("GET", "/api/v1/rooms/lobby/history", ""); strings.Contains(fmt.Sprint(h), "hello from the shop") {
		t.Fatalf("history after the delete: %v", h)
	}
	for path, status := range map[string]int{"/api/v1/rooms/lobby/messages/2": 404, "/api/v1/rooms/lobby/messages/3": 404,
		"/api/v1/rooms/lobby/messages/0": 400, "/api/v1/rooms/lobby/messages/x": 400} {
		if got, out := e.call("DELETE", path, ""); got != status {
			t.Fatalf("DELETE %s: %d %v, want %d", path, got, out, status)
		}
	}

	// The directory (private rooms too) and a search of a room's history.
	if l := e.must("GET", "/api/v1/rooms?q=LOB", ""); fmt.Sprint(l["rooms"]) != "[map[count:3 room:lobby]]" {
		t.Fatalf("rooms: %v", l)
	}
	if s := e.must("GET", "/api/v1/rooms/lobby/search?q=noon", ""); len(s["messages"].([]any)) != 1 || s["q"] != "noon" {
		t.Fatalf("search: %v", s)
	}
	for _, path := range []string{"/api/v1/rooms/lobby/search", "/api/v1/rooms/lobby/search?q=x&limit=0", "/api/v1/rooms?limit=x"} {
		if got, out := e.call("GET", path, ""); got != 400 {
			t.Fatalf("GET %s: %d %v, want 400", path, got, out)
		}
	}

	// A room nobody is in: opened, and its history kept.
	e.must("POST", "/api/v1/rooms/empty-room/messages", `{"text":"for later"}`)
	h := e.must("GET", "/api/v1/rooms/empty-room/history", "")
	if msgs, _ := h["messages"].([]any); len(msgs) != 1 || !strings.Contains(fmt.Sprint(msgs[0]), "for later") {
		t.Fatalf("history: %v", h)
	}
	if h := e.must("GET", "/api/v1/rooms/lobby/history?limit=1", ""); len(h["messages"].([]any)) != 1 {
		t.Fatalf("history with limit 1: %v", h)
	}

	// Presence counts users.
	alice2 := e.user("u-alice")
	p := e.must("GET", "/api/v1/rooms/lobby/presence", "")
	if p["count"] != 3.0 || len(p["members"].([]any)) != 3 {
		t.Fatalf("presence: %v (alice has two connections: count 3 people)", p)
	}

	// A DM to a user reaches all its connections.
	e.must("POST", "/api/v1/users/u-alice/messages", `{"text":"your order shipped"}`)
	for _, c := range []*chattest.Client{alice, alice2} {
		if d := c.Expect("dm"); d.Text != "your order shipped" || d.From != "system" || d.ToUser != "u-alice" {
			t.Fatalf("%+v", d)
		}
	}

	// Mute, then unmute.
	out := e.must("PUT", "/api/v1/rooms/lobby/mutes/u-bob", `{"duration":"10m","reason":"flood"}`)
	if r := out["rule"].(map[string]any); r["kind"] != "mute" || r["room"] != "lobby" || r["subject"] != "u-bob" || out["until"] == "" {
		t.Fatalf("mute: %v", out)
	}
	bob.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "x"})
	bob.ExpectError(protocol.CodeMuted)
	if r := e.must("GET", "/api/v1/rules?kind=mute", ""); len(r["rules"].([]any)) != 1 {
		t.Fatalf("rules: %v", r)
	}
	e.must("DELETE", "/api/v1/rooms/lobby/mutes/u-bob", "")
	if r := e.must("GET", "/api/v1/rules", ""); len(r["rules"].([]any)) != 0 {
		t.Fatalf("rules after the unmute: %v", r)
	}

	// Invite to a private room, then withdraw it.
	bob.Send(protocol.Request{Type: protocol.TypeJoin, Room: "vip"})
	bob.ExpectError(protocol.CodeForbidden)
	e.must("PUT", "/api/v1/rooms/vip/invitations/u-bob", `{"duration":"1h"}`)
	bob.Send(protocol.Request{Type: protocol.TypeJoin, Room: "vip"})
	bob.Expect("join")
	bob.Expect("history")
	e.must("DELETE", "/api/v1/rooms/vip/invitations/u-bob", "")
	bob.Send(protocol.Request{Type: protocol.TypeLeave, Room: "vip"})
	bob.Expect("leave")
	bob.Send(protocol.Request{Type: protocol.TypeJoin, Room: "vip"})
	bob.ExpectError(protocol.CodeForbidden)

	// Disconnect with a code.
	e.must("POST", "/api/v1/users/u-alice/disconnect", `{"code":4100,"reason":"account closed"}`)
	for _, c := range []*chattest.Client{alice, alice2} {
		if ce, err := c.ExpectClose(); err != nil || ce.Code != 4100 || ce.Reason != "account closed" {
			t.Fatalf("%+v, %v", ce, err)
		}
	}

	// Ban a user, then an address; each refused at the handshake.
	e.must("PUT", "/api/v1/bans/users/u-bob", `{"duration":"1h","reason":"abuse"}`)
	if ce, err := bob.ExpectClose(); err != nil || ce.Code != int(protocol.CloseBanned) {
		t.Fatalf("%+v, %v", ce, err)
	}
	e.must("DELETE", "/api/v1/bans/users/u-bob", "")
	e.user("u-bob")
	e.must("PUT", "/api/v1/bans/addrs/127.0.0.0/8", `{"duration":"1m"}`)
	if r := e.must("GET", "/api/v1/rules?kind=ban_addr", ""); fmt.Sprint(r["rules"]) == "[]" {
		t.Fatalf("address bans: %v", r)
	}
	if ce, err := guest.ExpectClose(); err != nil || ce.Code != int(protocol.CloseBanned) {
		t.Fatalf("guest: %+v, %v", ce, err)
	}
	e.must("DELETE", "/api/v1/bans/addrs/127.0.0.0/8", "")
	chattest.Connect(t, e.ws)

	// Stats: the node's and the cluster's.
	st := e.must("GET", "/api/v1/stats", "")
	cluster, _ := st["cluster"].([]any)
	if st["engine"] == nil || st["chat"] == nil || len(cluster) != 1 || st["clients"] != cluster[0].(map[string]any)["clients"] ||
		st["node"] != "local" || cluster[0].(map[string]any)["node"] != "local" { // a lone server is "local", as with --data-dir
		t.Fatalf("stats: %v", st)
	}
	for _, route := range e.api.Routes() {
		if n := callsOf(e.api.Stats(), route); n == 0 {
			t.Errorf("route %s was never called with success", route)
		}
	}
}

func callsOf(hits map[api.Hit]uint64, route string) uint64 {
	return hits[api.Hit{Route: route, Status: 200}]
}

func TestKeyLength(t *testing.T) {
	hub, err := chat.New(chat.Config{Logger: testserver.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.New(api.Config{Key: "short"}, hub); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Fatalf("a 5-byte key: %v", err)
	}
}

// TestRulesCap: past --max-rules a new rule is refused with 507 and a
// code, not answered 200 and dropped.
func TestRulesCap(t *testing.T) {
	e := start(t, func(c *chat.Config) { c.MaxRules = 1 })
	e.must("PUT", "/api/v1/bans/users/u1", `{"duration":"1h"}`)
	status, out := e.call("PUT", "/api/v1/rooms/lobby/mutes/u2", `{"duration":"1h"}`)
	if msg, _ := out["error"].(string); status != http.StatusInsufficientStorage || out["code"] != "rule_limit" || !strings.Contains(msg, "1 rules") {
		t.Fatalf("a rule past the cap: %d %v", status, out)
	}
	e.must("PUT", "/api/v1/bans/users/u1", `{"duration":"2h"}`) // a held one changes
	if rules := e.must("GET", "/api/v1/rules", "")["rules"].([]any); len(rules) != 1 {
		t.Fatalf("rules %v", rules)
	}
}

// TestAnswersAreReadable: answers are JSON as a person reads it in curl:
// "<key>" is not escaped to \u003ckey\u003e.
func TestAnswersAreReadable(t *testing.T) {
	e := start(t)
	resp, err := http.Get(e.base + "/api/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 401 || !strings.Contains(string(b), "Authorization: Bearer <key>") {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}

// TestWrongKeysThrottled: past FailedKeyBurst wrong keys an address gets
// 429 with Retry-After, its key unchecked (a right one too), until its
// budget refills; another address is not held back.
func TestWrongKeysThrottled(t *testing.T) {
	e := start(t)
	for i := range api.FailedKeyBurst {
		if status, _ := e.call("GET", "/api/v1/stats", "", "Bearer wrong-key-"+strconv.Itoa(i)); status != 401 {
			t.Fatalf("wrong key %d: %d, want 401", i, status)
		}
	}
	for _, authz := range []string{"Bearer wrong-key-x", "Bearer " + key} {
		status, out := e.call("GET", "/api/v1/stats", "", authz)
		if status != http.StatusTooManyRequests || out["code"] != "too_many_failures" {
			t.Fatalf("after %d wrong keys, %q: %d %v, want 429", api.FailedKeyBurst, authz[:12], status, out)
		}
	}
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	req, _ := http.NewRequest("GET", e.base+"/api/v1/stats", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := other.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("another address with the key: %d", resp.StatusCode)
	}
	poll.Until(t, "the budget refilled", func() bool {
		status, _ := e.call("GET", "/api/v1/stats", "")
		return status == 200
	})
	if hits := e.api.Stats(); hits[api.Hit{Route: "GET /api/v1/stats", Status: 429}] < 2 {
		t.Fatalf("counted: %v", hits)
	}
}

// TestForcedWideBan: a ban wider than a /8 goes in force with "force".
func TestForcedWideBan(t *testing.T) {
	e := start(t)
	out := e.must("PUT", "/api/v1/bans/addrs/0.0.0.0/0", `{"duration":"1m","force":true}`)
	if r := out["rule"].(map[string]any); r["subject"] != "0.0.0.0/0" {
		t.Fatalf("%v", out)
	}
	e.must("PUT", "/api/v1/bans/addrs/10.0.0.0/8", `{"duration":"1m"}`) // a /8 needs no force
	e.must("DELETE", "/api/v1/bans/addrs/0.0.0.0/0", "")
}
