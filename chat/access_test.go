package chat_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleyhq/parley/auth"
	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/internal/wstest"
	"github.com/parleyhq/parley/protocol"
)

// issuer signs the tokens of these tests.
func issuer(t testing.TB) *authtest.Issuer { return authtest.New(t) }

// withToken adds an access_token (and more query parameters) to a ws URL.
func withToken(u, token string, kv ...string) string {
	q := url.Values{}
	if token != "" {
		q.Set("access_token", token)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Add(kv[i], kv[i+1])
	}
	return u + "?" + q.Encode()
}

// refused dials u and returns the refusal's status and body.
func refused(t testing.TB, u string, hdr http.Header) (int, string, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := wstest.Dial(ctx, u, hdr)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: upgraded, want a refusal", u)
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

// signedIn connects with token and reads the welcome, join and history.
func signedIn(t testing.TB, u, token string, kv ...string) (*client, chattest.Event) {
	t.Helper()
	c := chattest.Dial(t, withToken(u, token, kv...))
	w := c.Expect("welcome")
	c.Nick, c.ID = w.Nick, w.ID
	c.Expect("join")
	c.Expect("history")
	return c, w
}

// TestHandshakeRefusals: each bad token, and each other refusal, gets its
// status and a body that says why, and is counted under its reason.
func TestHandshakeRefusals(t *testing.T) {
	t.Parallel()
	is := issuer(t)
	hub, _, u := startChat(t, chat.Config{Verifier: is.Verifier(), PrivateRooms: []string{"staff"}}, engine.Config{})
	now := time.Now()
	with := func(f func(c *auth.Claims)) string { c := authtest.Claims("u1"); f(c); return is.Sign(c) }
	good := is.Sign(authtest.Claims("u1"))
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es256, _ := jwt.NewWithClaims(jwt.SigningMethodES256, authtest.Claims("u1")).SignedString(ec)
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		strings.Split(good, ".")[1] + "."
	for _, tc := range []struct {
		name   string
		url    string
		hdr    http.Header
		status int
		body   string
		reason string
	}{
		{"no token, guests off", u, nil, 401, "token missing", chat.RefusedTokenMissing},
		{"forged signature", withToken(u, good[:len(good)-3]+"AAA"), nil, 401, "signature is invalid", chat.RefusedTokenInvalid},
		{"alg none", withToken(u, none), nil, 401, "token invalid", chat.RefusedTokenInvalid},
		{"wrong key type (ES256 where only an HMAC key is)", withToken(u, es256), nil, 401, `signing method "ES256" is not allowed`, chat.RefusedTokenInvalid},
		{"expired", withToken(u, with(func(c *auth.Claims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute)) })), nil, 401, "token expired", chat.RefusedTokenExpired},
		{"not yet valid", withToken(u, with(func(c *auth.Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Minute)) })), nil, 401, "token not yet valid", chat.RefusedTokenNotYet},
		{"wrong audience", withToken(u, with(func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{"other"} })), nil, 401, "another audience", chat.RefusedTokenAudience},
		{"a nick that is no nick", withToken(u, with(func(c *auth.Claims) { c.Nick = "a b" })), nil, 401, "nick", chat.RefusedTokenInvalid},
		{"a guest- nick", withToken(u, with(func(c *auth.Claims) { c.Nick = "guest-1" })), nil, 401, "guest-", chat.RefusedTokenInvalid},
		{"token twice", withToken(u, good, "access_token", good), nil, 400, "more than once", chat.RefusedBadRequest},
		{"token in query and header", withToken(u, good), http.Header{"Authorization": {"Bearer " + good}}, 400, "both", chat.RefusedBadRequest},
		{"a bad room", withToken(u, good, "room", "no such/room"), nil, 400, "room name", chat.RefusedBadRequest},
		{"a private room without the claim", withToken(u, good, "room", "staff"), nil, 403, `"staff" is private`, chat.RefusedForbiddenRoom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hub.Stats().Refused[tc.reason]
			status, body, hdr := refused(t, tc.url, tc.hdr)
			if status != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("%d %q, want %d with %q", status, body, tc.status, tc.body)
			}
			if strings.Contains(body, good) {
				t.Fatalf("the body repeats the token: %q", body)
			}
			if status == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without WWW-Authenticate: Bearer: %v", hdr)
			}
			if after := hub.Stats().Refused[tc.reason]; after != before+1 {
				t.Fatalf("refusals for %s: %d -> %d", tc.reason, before, after)
			}
		})
	}
	// The same token is fine in a header, as non-browser clients send it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := wstest.Dial(ctx, u, http.Header{"Authorization": {"Bearer " + good}})
	if err != nil {
		t.Fatalf("a token in Authorization: %v", err)
	}
	c.Close()
}

// TestGuests: with a key, guests are refused unless admitted; admitted
// beside users, they keep the server's nick. Without a key, a token is
// refused rather than ignored.
func TestGuests(t *testing.T) {
	t.Parallel()
	is := issuer(t)
	_, _, u := startChat(t, chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsAllowed}, engine.Config{})
	g := connect(t, u)
	if !strings.HasPrefix(g.Nick, "guest-") {
		t.Fatalf("guest nick %q", g.Nick)
	}
	g.Send(protocol.Request{Type: protocol.TypeNick, Nick: "alice"})
	g.ExpectError(protocol.CodeForbidden)

	_, _, open := startChat(t, chat.Config{}, engine.Config{})
	if status, body, _ := refused(t, withToken(open, is.Sign(authtest.Claims("u1"))), nil); status != 401 || !strings.Contains(body, "no key") {
		t.Fatalf("a token on a server without keys: %d %q", status, body)
	}
	if _, err := chat.New(chat.Config{Guests: chat.GuestsRefused}); err == nil {
		t.Fatal("guests refused with no key: nobody could connect, want an error")
	}
}

// TestOneUserManyConnections: a user keeps its token's nick on every
// connection, counts once in presence, and a DM to it reaches all its
// connections (and the sender's other ones).
func TestOneUserManyConnections(t *testing.T) {
	t.Parallel()
	is := issuer(t)
	hub, _, u := startChat(t, chat.Config{Verifier: is.Verifier(), PresenceInterval: 20 * time.Millisecond}, engine.Config{})
	ca := authtest.Claims("u-alice")
	ca.Nick = "Alice"
	a1, w := signedIn(t, u, is.Sign(ca))
	a2, _ := signedIn(t, u, is.Sign(ca))
	if a1.Nick != "Alice" || a2.Nick != "Alice" {
		t.Fatalf("nicks %q and %q, want Alice on both", a1.Nick, a2.Nick)
	}
	if w.User != "u-alice" || w.Expires != ca.ExpiresAt.UnixMilli() {
		t.Fatalf("welcome %+v, want user u-alice and the token's expiry", w)
	}
	bob, _ := signedIn(t, u, is.Sign(authtest.Claims("u-bob")))
	// bob's join answer counts alice once.
	for {
		p := bob.Expect("presence")
		if p.Count == 2 {
			break
		}
		if p.Count > 2 {
			t.Fatalf("presence counts connections: %+v", p)
		}
	}
	if st := hub.Stats(); st.Users != 2 {
		t.Fatalf("users %d, want 2", st.Users)
	}
	a2.Send(protocol.Request{Type: protocol.TypeNick, Nick: "Alicia"})
	a2.ExpectError(protocol.CodeForbidden)

	bob.Send(protocol.Request{Type: protocol.TypeDM, User: "u-alice", Text: "to every tab"})
	for _, c := range []*client{a1, a2, bob} {
		if d := c.Expect("dm"); d.Text != "to every tab" || d.From != "u-bob" || d.FromUser != "u-bob" || d.ToUser != "u-alice" {
			t.Fatalf("%s got %+v", c.Nick, d)
		}
	}
	// One tab leaving is not news; the last one is.
	a2.Close()
	a1.Close()
	for {
		p := bob.Expect("presence")
		if len(p.Left) > 0 {
			if len(p.Left) != 1 || p.Left[0] != "Alice" || p.Count != 1 {
				t.Fatalf("leave %+v, want Alice once, count 1", p)
			}
			break
		}
	}
	bob.Send(protocol.Request{Type: protocol.TypeDM, User: "u-bob", To: "x", Text: "both"})
	bob.ExpectError(protocol.CodeBadRequest)
}

// TestRoomAccess: private rooms need a claim or an invitation; read-only
// rooms take says from users with a say claim (and the server API) only;
// a mute holds until lifted.
func TestRoomAccess(t *testing.T) {
	t.Parallel()
	is := issuer(t)
	hub, _, u := startChat(t, chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsAllowed,
		PrivateRooms: []string{"team-*"}, ReadOnlyRooms: []string{"news"}}, engine.Config{})
	cs := authtest.Claims("u-staff")
	cs.Rooms, cs.Say = []string{"team-*"}, []string{"news"}
	staff, _ := signedIn(t, u, is.Sign(cs))
	user, _ := signedIn(t, u, is.Sign(authtest.Claims("u-plain")))
	guest := connect(t, u)

	for _, c := range []*client{user, guest} {
		c.Send(protocol.Request{Type: protocol.TypeJoin, Room: "team-a"})
		if e := c.ExpectError(protocol.CodeForbidden); !strings.Contains(e.Message, "private") {
			t.Fatalf("%+v", e)
		}
	}
	staff.Send(protocol.Request{Type: protocol.TypeJoin, Room: "team-a"})
	staff.Expect("join")
	staff.Expect("history")
	// ?room= at the handshake: with the claim, the client starts there.
	_, w := signedIn(t, u, is.Sign(cs), "room", "team-b")
	if w.Room != "team-b" {
		t.Fatalf("welcome room %q, want team-b", w.Room)
	}

	// An invitation lets a user in, and only that user.
	if err := hub.PutRule(context.Background(), chat.Rule{Kind: chat.RuleInvite, Room: "team-a", Subject: "u-plain", Until: time.Now().Add(time.Hour).UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	user.Send(protocol.Request{Type: protocol.TypeJoin, Room: "team-a"})
	user.Expect("join")
	user.Expect("history")

	// Read-only: everyone may join and read, only the say claim speaks.
	for _, c := range []*client{staff, user, guest} {
		c.Send(protocol.Request{Type: protocol.TypeJoin, Room: "news"})
		c.Expect("join")
		c.Expect("history")
	}
	for _, c := range []*client{user, guest} {
		c.Send(protocol.Request{Type: protocol.TypeSay, Room: "news", Text: "me too"})
		c.ExpectError(protocol.CodeReadOnly)
		c.Send(protocol.Request{Type: protocol.TypeTyping, Room: "news"})
		c.ExpectError(protocol.CodeReadOnly)
	}
	staff.Send(protocol.Request{Type: protocol.TypeSay, Room: "news", Text: "announcement"})
	for _, c := range []*client{staff, user, guest} {
		if m := c.Expect("message"); m.Text != "announcement" || m.From != "u-staff" {
			t.Fatalf("%+v", m)
		}
	}
	if err := hub.Publish(context.Background(), "news", "from the backend", chat.Sender{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{staff, user, guest} {
		_, raw, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var m protocol.Message
		if err := json.Unmarshal(raw, &m); err != nil || !m.System || m.From != "system" || m.Text != "from the backend" {
			t.Fatalf("a system message: %s", raw)
		}
	}

	// A mute, then its end.
	mute := chat.Rule{Kind: chat.RuleMute, Room: "lobby", Subject: "u-plain", Until: time.Now().Add(time.Hour).UnixMilli(), Reason: "spam"}
	if err := hub.PutRule(context.Background(), mute); err != nil {
		t.Fatal(err)
	}
	user.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "hello?"})
	user.ExpectError(protocol.CodeMuted)
	if err := hub.DeleteRule(context.Background(), mute); err != nil {
		t.Fatal(err)
	}
	user.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "back"})
	if m := user.Expect("message"); m.Text != "back" {
		t.Fatalf("%+v", m)
	}
}

// TestBans: a ban closes the user's clients with 4003 and refuses it at
// the handshake with 403 until lifted; an address ban does the same for
// an address.
func TestBans(t *testing.T) {
	t.Parallel()
	is := issuer(t)
	hub, _, u := startChat(t, chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsAllowed}, engine.Config{})
	token := is.Sign(authtest.Claims("u-bad"))
	c, _ := signedIn(t, u, token)
	other, _ := signedIn(t, u, is.Sign(authtest.Claims("u-good")))
	ban := chat.Rule{Kind: chat.RuleBanUser, Subject: "u-bad", Until: time.Now().Add(time.Hour).UnixMilli(), Reason: "abuse"}
	if err := hub.PutRule(context.Background(), ban); err != nil {
		t.Fatal(err)
	}
	if ce, err := c.ExpectClose(); err != nil || ce.Code != int(protocol.CloseBanned) {
		t.Fatalf("banned client: %+v, %v; want close %d", ce, err, protocol.CloseBanned)
	}
	status, body, _ := refused(t, withToken(u, token), nil)
	if status != 403 || !strings.Contains(body, "banned until") || !strings.Contains(body, "abuse") {
		t.Fatalf("a banned user's handshake: %d %q", status, body)
	}
	if err := hub.DeleteRule(context.Background(), ban); err != nil {
		t.Fatal(err)
	}
	signedIn(t, u, token)
	other.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "still here"})
	other.Expect("message")

	addr := chat.Rule{Kind: chat.RuleBanAddr, Subject: "127.0.0.0/8", Until: time.Now().Add(time.Hour).UnixMilli()}
	if err := hub.PutRule(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	if ce, err := other.ExpectClose(); err != nil || ce.Code != int(protocol.CloseBanned) {
		t.Fatalf("client of a banned address: %+v, %v", ce, err)
	}
	if status, body, _ := refused(t, u, nil); status != 403 || !strings.Contains(body, "banned") {
		t.Fatalf("a banned address's handshake: %d %q", status, body)
	}
	if got := hub.Rules(chat.RuleBanAddr); len(got) != 1 || got[0].Subject != "127.0.0.0/8" {
		t.Fatalf("rules: %+v", got)
	}
	if err := hub.DeleteRule(context.Background(), chat.Rule{Kind: chat.RuleBanAddr, Subject: "127.0.0.0/8"}); err != nil {
		t.Fatal(err)
	}
	connect(t, u)
	for _, bad := range []chat.Rule{
		{Kind: chat.RuleBanAddr, Subject: "127.0.0.1/8", Until: 1},
		{Kind: chat.RuleBanAddr, Subject: "localhost", Until: 1},
		{Kind: chat.RuleMute, Subject: "u", Until: 1},
		{Kind: "exile", Subject: "u", Until: 1},
		{Kind: chat.RuleBanUser, Subject: "u", Until: 0},
		{Kind: chat.RuleBanUser, Subject: "a\nb", Until: 1},
	} {
		if err := hub.PutRule(context.Background(), bad); !errors.Is(err, chat.ErrInvalid) {
			t.Errorf("PutRule(%+v): %v, want ErrInvalid", bad, err)
		}
	}
}

// TestTokenExpiry: a client whose token expires is closed with 4001; one
// that sent a fresh token for the same user in time stays.
func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	is := issuer(t)
	_, _, u := startChat(t, chat.Config{Verifier: is.Verifier(), PresenceInterval: 20 * time.Millisecond}, engine.Config{})
	short := func(user string) string {
		c := authtest.Claims(user)
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(2 * time.Second))
		return is.Sign(c)
	}
	stays, _ := signedIn(t, u, short("u1"))
	goes, _ := signedIn(t, u, short("u2"))

	stays.Send(protocol.Request{Type: protocol.TypeAuth, Token: is.Sign(authtest.Claims("u2"))})
	if e := stays.ExpectError(protocol.CodeBadToken); !strings.Contains(e.Message, "another user") {
		t.Fatalf("%+v", e)
	}
	stays.Send(protocol.Request{Type: protocol.TypeAuth, Token: "garbage"})
	stays.ExpectError(protocol.CodeBadToken)
	fresh := authtest.Claims("u1")
	stays.Send(protocol.Request{Type: protocol.TypeAuth, Token: is.Sign(fresh)})
	_, raw, err := stays.ReadMessage()
	for err == nil && strings.Contains(string(raw), `"presence"`) {
		_, raw, err = stays.ReadMessage()
	}
	var a protocol.Authed
	if err != nil || json.Unmarshal(raw, &a) != nil || a.Type != "auth" || a.Expires != fresh.ExpiresAt.UnixMilli() {
		t.Fatalf("answer to a refresh: %s, %v", raw, err)
	}

	if ce, err := goes.ExpectClose(); err != nil || ce.Code != int(protocol.CloseTokenExpired) {
		t.Fatalf("expired client: %+v, %v; want close %d", ce, err, protocol.CloseTokenExpired)
	}
	stays.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "refreshed"})
	if m := stays.Expect("message"); m.Text != "refreshed" {
		t.Fatalf("%+v", m)
	}
}

// TestTokenFarFuture: a token whose exp is past 2262 (9999999999, a common
// "never", or larger) keeps its user signed in: the expiry does not
// overflow into the past. A client with a token of one second is closed
// by the same sweep that would have closed the others.
func TestTokenFarFuture(t *testing.T) {
	t.Parallel()
	is := issuer(t)
	_, _, u := startChat(t, chat.Config{Verifier: is.Verifier(), PresenceInterval: 20 * time.Millisecond}, engine.Config{})
	token := func(user string, exp time.Time) string {
		c := authtest.Claims(user)
		c.ExpiresAt = jwt.NewNumericDate(exp)
		return is.Sign(c)
	}
	never, w := signedIn(t, u, token("u1", time.Unix(9999999999, 0)))
	if w.Expires != 9999999999000 {
		t.Fatalf("welcome expires %d, want 9999999999000", w.Expires)
	}
	later, _ := signedIn(t, u, token("u2", time.Unix(1e17, 0)))
	soon, _ := signedIn(t, u, token("u3", time.Now().Add(time.Second)))
	if ce, err := soon.ExpectClose(); err != nil || ce.Code != int(protocol.CloseTokenExpired) {
		t.Fatalf("expired client: %+v, %v; want close %d", ce, err, protocol.CloseTokenExpired)
	}
	for i, c := range []*client{never, later} {
		text := fmt.Sprintf("still here %d", i)
		c.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: text})
		for m := c.Expect("message"); m.Text != text; m = c.Expect("message") {
		}
	}
}

// TestRulesCap: past MaxRules a new ban, mute or invitation fails with
// ErrRuleLimit and is not pretended in force; changing or ending one held
// still works, and an ended one makes room.
func TestRulesCap(t *testing.T) {
	t.Parallel()
	hub, _, _ := startChat(t, chat.Config{MaxRules: 2}, engine.Config{})
	until := time.Now().Add(time.Hour).UnixMilli()
	ban := func(user string) chat.Rule { return chat.Rule{Kind: chat.RuleBanUser, Subject: user, Until: until} }
	for _, u := range []string{"u1", "u2"} {
		if err := hub.PutRule(context.Background(), ban(u)); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []chat.Rule{ban("u3"), {Kind: chat.RuleMute, Room: "lobby", Subject: "u1", Until: until},
		{Kind: chat.RuleInvite, Room: "vip", Subject: "u1", Until: until}} {
		if err := hub.PutRule(context.Background(), r); !errors.Is(err, chat.ErrRuleLimit) || !strings.Contains(err.Error(), "2 rules") {
			t.Fatalf("%s of %s past the cap: %v, want ErrRuleLimit naming the cap", r.Kind, r.Subject, err)
		}
	}
	if n := len(hub.Rules("")); n != 2 {
		t.Fatalf("%d rules in force, want 2", n)
	}
	longer := ban("u2")
	longer.Until += 1000
	if err := hub.PutRule(context.Background(), longer); err != nil {
		t.Fatalf("changing a rule held at the cap: %v", err)
	}
	if err := hub.DeleteRule(context.Background(), ban("u1")); err != nil {
		t.Fatal(err)
	}
	if err := hub.PutRule(context.Background(), ban("u3")); err != nil {
		t.Fatalf("a rule after one ended: %v", err)
	}
	if got := len(hub.Rules(chat.RuleBanUser)); got != 2 {
		t.Fatalf("%d bans in force, want 2", got)
	}
}

// TestUsersHaveReservedSlots: the engine's reserved slots go to signed-in
// users only: with the guests' share taken by guests who spoke, a guest is
// refused and a user admitted.
func TestUsersHaveReservedSlots(t *testing.T) {
	t.Parallel()
	is := issuer(t)
	_, _, u := startChat(t, chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsAllowed, RateLimit: -1},
		engine.Config{MaxConnections: 4, ReservedConnections: 2})
	for range 2 {
		g := connect(t, u)
		g.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "here"}) // spoke: never made room for another
		g.Expect("message")
	}
	if status, _, _ := refused(t, u, nil); status != http.StatusServiceUnavailable {
		t.Fatalf("a guest past the guests' share: %d, want 503", status)
	}
	signedIn(t, u, is.Token("u1"))
}

// TestCheckHandler: the check answers as the handshake would, status and
// reason, without counting a refusal.
func TestCheckHandler(t *testing.T) {
	t.Parallel()
	is := issuer(t)
	hub, err := chat.New(chat.Config{Verifier: is.Verifier(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	expired := authtest.Claims("u1")
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
	for _, tc := range []struct {
		query  string
		status int
		body   string
	}{
		{"", 401, "401 token missing"},
		{"?access_token=" + is.Token("u1"), 200, "ok"},
		{"?access_token=" + is.Sign(expired), 401, "401 token expired"},
		{"?room=a%20b", 400, "400 room name"},
	} {
		w := httptest.NewRecorder()
		hub.CheckHandler().ServeHTTP(w, httptest.NewRequest("GET", "/ws/check"+tc.query, nil))
		if w.Code != tc.status || !strings.HasPrefix(w.Body.String(), tc.body) {
			t.Errorf("%q: %d %q, want %d %q", tc.query, w.Code, w.Body, tc.status, tc.body)
		}
	}
	for reason, n := range hub.Stats().Refused {
		if n != 0 {
			t.Errorf("counted a refusal: %s %d", reason, n)
		}
	}
}
