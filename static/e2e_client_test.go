package static_test

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/lesismal/nbio/logging"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/protocol"
)

// TestBrowserClientLibrary runs the JavaScript client (clients/js,
// served at /parley.js) in Chromium, with the browser's own WebSocket:
// it connects, says a message, says another while its server restarts
// (it waits for the new one), and hears everything once.
func TestBrowserClientLibrary(t *testing.T) {
	logging.SetLevel(logging.LevelNone)
	exe := chromium(t)
	addr := freeAddr(t)
	srv := chatServer(t, addr)
	defer func() { stop(srv) }()
	tctx, poll := browser(t, exe, 60*time.Second)
	if err := chromedp.Do(tctx, chromedp.Navigate("http://"+addr+"/test")); err != nil {
		t.Fatal(err)
	}
	start := `(async () => {
		const { ParleyClient } = await import('/parley.js');
		const lib = window.lib = { texts: [], seqs: [], drops: 0 };
		const c = window.client = new ParleyClient({ url: 'ws://' + location.host + '/ws', nick: 'libbot', minBackoff: 50, maxBackoff: 300 });
		c.on('message', (m) => { if (m.room === 'lobby') { lib.texts.push(m.text); lib.seqs.push(m.seq); } });
		c.on('history', (h) => { for (const m of h.messages) if (m.type === 'message') { lib.texts.push(m.text); lib.seqs.push(m.seq); } });
		c.on('disconnected', () => lib.drops++);
		await c.connect();
		await c.say('lobby', 'one');
		lib.one = true;
	})()`
	if err := chromedp.Do(tctx, chromedp.Evaluate[chromedp.Void](start)); err != nil {
		t.Fatal(err)
	}
	poll("the first message said", `window.lib && window.lib.one === true && window.lib.texts.includes("one")`)
	stop(srv)
	poll("the client to see its server go", `window.lib.drops >= 1`)
	if err := chromedp.Do(tctx, chromedp.Evaluate[chromedp.Void](`window.client.say('lobby', 'two').then(() => { window.lib.two = true })`)); err != nil {
		t.Fatal(err)
	}
	srv = chatServer(t, addr) // a new server at the same address: a new epoch
	poll("the message said offline to be stored", `window.lib.two === true`)
	other := chattest.Connect(t, "ws://"+addr+"/ws")
	other.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "three"})
	poll("the client to hear the others", `window.lib.texts.includes("three")`)
	poll("everything once, in order", `JSON.stringify(window.lib.texts) === JSON.stringify(["one", "two", "three"])`)
}
