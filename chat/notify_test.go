package chat_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/notify"
	"github.com/parleyhq/parley/protocol"
)

// TestNotifyUnread: mentions and DMs that no connection of their user
// read within NotifyDelay are posted to a real HTTP receiver, signed;
// those read in time are not.
func TestNotifyUnread(t *testing.T) {
	t.Parallel()
	secret := []byte("the-backend-shares-this-secret")
	got := make(chan chat.Notification, 10)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.Verify(secret, body, r.Header.Get(notify.SignatureHeader), time.Now(), time.Minute); err != nil {
			t.Errorf("unsigned post: %v", err)
			return
		}
		var n chat.Notification
		if err := json.Unmarshal(body, &n); err != nil {
			t.Errorf("%s: %v", body, err)
		}
		got <- n
	}))
	t.Cleanup(rcv.Close)
	p, err := notify.New(notify.Config{URL: rcv.URL, Secret: secret, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	is := authtest.New(t)
	const delay = 2 * time.Second // the reads below come well within it, even on a busy machine
	hub, _, url := startChat(t, chat.Config{Verifier: is.Verifier(), Notifier: p, NotifyDelay: delay}, engine.Config{})
	away := connect(t, url+"?access_token="+is.Token("u-away"))
	here := connect(t, url+"?access_token="+is.Token("u-here"))
	bob := connect(t, url+"?access_token="+is.Token("u-bob"))

	said := time.Now()
	bob.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "@u-away @u-here @nobody standup?"})
	m := here.Expect("message")
	here.Send(protocol.Request{Type: protocol.TypeRead, Room: "lobby", Seq: m.Seq}) // u-here reads it
	bob.Send(protocol.Request{Type: protocol.TypeDM, User: "u-offline", Text: "call me"})
	bob.Send(protocol.Request{Type: protocol.TypeDM, User: "u-here", Text: "lunch?"})
	for here.ExpectOneOf("dm", "read").Type != "dm" { // its read comes back too, before or after
	}
	here.Send(protocol.Request{Type: protocol.TypeRead, DM: true})

	want := map[string]chat.Notification{
		"mention u-away": {Kind: "mention", User: "u-away", Room: "lobby", Seq: m.Seq, From: "u-bob", FromUser: "u-bob", Text: "@u-away @u-here @nobody standup?"},
		"dm u-offline":   {Kind: "dm", User: "u-offline", From: "u-bob", FromUser: "u-bob", Text: "call me"},
	}
	for len(want) > 0 {
		select {
		case n := <-got:
			w, ok := want[n.Kind+" "+n.User]
			if !ok || n.Room != w.Room || n.Seq != w.Seq || n.From != w.From || n.FromUser != w.FromUser || n.Text != w.Text || n.ID == "" {
				t.Fatalf("notified %+v", n)
			}
			if time.Since(said) < delay {
				t.Fatalf("notified before NotifyDelay: %+v", n)
			}
			delete(want, n.Kind+" "+n.User)
		case <-time.After(30 * time.Second):
			t.Fatalf("not notified: %v", want)
		}
	}
	poll.Until(t, "the read ones dropped", func() bool { st := hub.Stats(); return st.NotesRead == 2 && st.Notified == 2 })
	_ = away
	select {
	case n := <-got:
		t.Fatalf("notified of what was read: %+v (poster %+v, hub %+v)", n, p.Stats(), hub.Stats().Notified)
	default:
	}
}
