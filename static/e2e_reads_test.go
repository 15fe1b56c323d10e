package static_test

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/lesismal/nbio/logging"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/chat/natsbroker"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/protocol"
)

// TestBrowserReadsAcrossDevices: one user on two devices (two browser
// contexts) connected to two nodes of a cluster. A room read on the
// phone clears its unread count on the laptop; a reload of the laptop
// shows the counts and the "new since you left" line from the server's
// read position.
func TestBrowserReadsAcrossDevices(t *testing.T) {
	logging.SetLevel(logging.LevelNone)
	exe := chromium(t)
	quiet := slog.New(slog.DiscardHandler)
	const secret = "a-test-token-of-32-bytes-or-more!"
	ns, err := natsbroker.StartServer(natsbroker.ServerConfig{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Token: secret, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	is := authtest.New(t)
	var urls []string
	for i := range 2 {
		b, err := natsbroker.New(natsbroker.Config{URL: ns.URL(), Token: secret, Node: fmt.Sprintf("n%d", i+1), Heartbeat: 100 * time.Millisecond, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		hub, err := chat.New(chat.Config{Broker: b, Verifier: is.Verifier(), Guests: chat.GuestsAllowed, Logger: quiet, PresenceInterval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		srv := pageServer(t, "127.0.0.1:0", hub)
		t.Cleanup(func() { stop(srv) })
		urls = append(urls, srv.Addr().String())
	}
	token := url.QueryEscape(is.Token("u1"))
	b := people(t, exe)
	laptop, _ := openPage(t, b, "laptop", "http://"+urls[0]+"/#room=team&token="+token, false)
	phone, _ := openPage(t, b, "phone", "http://"+urls[1]+"/#room=team&token="+token, true)
	for _, p := range []*page{laptop, phone} {
		p.wait("signed in, in #team", `document.querySelector("#status").textContent === "connected as u1 (signed in)" && document.querySelector("#title").textContent === "#team"`)
	}
	// Both look at the lobby; a colleague speaks in #team.
	toLobby := func(p *page) {
		t.Helper()
		p.js("to the lobby", `[...document.querySelectorAll("#rooms li button.item")].find(b => b.textContent === "#lobby").click()`)
		p.wait("in the lobby", `document.querySelector("#title").textContent === "#lobby"`)
	}
	toLobby(laptop)
	toLobby(phone)
	colleague := chattest.Connect(t, "ws://"+urls[0]+"/ws?access_token="+is.Token("u2"))
	colleague.Send(protocol.Request{Type: protocol.TypeJoin, Room: "team"})
	colleague.Expect("join")
	colleague.Expect("history")
	for i := range 3 {
		colleague.Send(protocol.Request{Type: protocol.TypeSay, Room: "team", Text: fmt.Sprintf("update %d", i)})
	}
	badge := `([...document.querySelectorAll("#rooms li")].find(li => li.textContent.includes("#team"))?.querySelector(".badge")?.textContent || "")`
	laptop.wait("3 unread in #team", badge+` === "3"`)
	phone.wait("3 unread on the phone too", badge+` === "3"`)
	// The phone opens #team: it marks it read; the laptop's count goes.
	start := time.Now()
	phone.js("open #team", `[...document.querySelectorAll("#rooms li button.item")].find(b => b.textContent === "#team").click()`)
	laptop.wait("the laptop's count cleared", badge+` === ""`)
	t.Logf("the phone opened #team; the laptop's count cleared after %v", time.Since(start))

	// Two more while nobody looks at #team (the phone goes to the lobby);
	// a reload of the laptop counts them from the server's position and
	// shows where they start.
	toLobby(phone)
	for i := 3; i < 5; i++ {
		colleague.Send(protocol.Request{Type: protocol.TypeSay, Room: "team", Text: fmt.Sprintf("update %d", i)})
	}
	phone.wait("2 unread on the phone", badge+` === "2"`)
	laptop.do("reload the laptop", chromedp.Reload())
	laptop.wait("after the reload: 2 unread in #team", `document.querySelector("#status").className === "open" && `+badge+` === "2"`)
	laptop.js("open #team", `[...document.querySelectorAll("#rooms li button.item")].find(b => b.textContent === "#team").click()`)
	laptop.wait("the new line above update 3", `(() => { const lis = [...document.querySelectorAll("#messages li")];
		const i = lis.findIndex(li => li.classList.contains("marker"));
		return i >= 0 && lis[i].textContent === "new since you left" && lis[i+1].textContent.includes("update 3"); })()`)
	phone.wait("and the phone's count went with the laptop's read", badge+` === ""`)

	// A small room says who read its last message.
	laptop.say("thanks")
	for { // raw: the page's message has a string id, which chattest.Event does not take
		s, err := colleague.ReadText()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s, `"text":"thanks"`) {
			break
		}
	}
	last := int64(6) // update 0-4, then thanks
	colleague.Send(protocol.Request{Type: protocol.TypeRead, Room: "team", Seq: last})
	laptop.wait("seen by the colleague", `document.querySelector("#seen").textContent === "Seen by u2"`)
	laptop.shot("reads-laptop.png")
}
