package static_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/golang-jwt/jwt/v5"
	"github.com/lesismal/nbio/logging"
	"github.com/parleyhq/parley/chat"
	parleyjs "github.com/parleyhq/parley/clients/js"
	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/internal/authtest"
	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/static"
)

// chatServer runs the chat with the embedded page on addr.
func chatServer(t *testing.T, addr string) *engine.Server {
	t.Helper()
	return chatServerWith(t, addr, chat.Config{})
}

// chatServerWith is chatServer with the hub's configuration.
func chatServerWith(t *testing.T, addr string, cfg chat.Config) *engine.Server {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	cfg.Logger, cfg.PresenceInterval = quiet, 50*time.Millisecond
	hub, err := chat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return pageServer(t, addr, hub)
}

// pageServer serves the page and hub on addr.
func pageServer(t *testing.T, addr string, hub *chat.Hub) *engine.Server {
	t.Helper()
	// Compression on, threshold off: Chromium negotiates permessage-deflate
	// and every message both ways is compressed.
	srv, err := engine.New(engine.Config{Addr: addr, Logger: slog.New(slog.DiscardHandler), Root: static.FS(), CloseTimeout: 500 * time.Millisecond,
		Compression: true, CompressionThreshold: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Mount("/ws", hub); err != nil {
		t.Fatal(err)
	}
	if err := srv.Handle("/ws/check", hub.CheckHandler()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Handle(parleyjs.Path, parleyjs.Handler()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	return srv
}

// freeAddr is a loopback address with a free port: a server restarted on
// it is where the pages left it.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func stop(srv *engine.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}

// submit submits a form as its button would, even inside a closed drawer.
func submit(form string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).requestSubmit()`, form))
}

// browser starts a headless Chromium with a tab for the test, bounded by
// limit, and returns the tab's context and a poll that waits (25 s at
// most) for a JavaScript condition in it.
func browser(t *testing.T, exe string, limit time.Duration) (context.Context, func(what, cond string)) {
	t.Helper()
	tctx, cancelT := context.WithTimeout(people(t, exe), limit)
	t.Cleanup(cancelT)
	return tctx, func(what, cond string) {
		t.Helper()
		if err := chromedp.Do(tctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond),
			chromedp.WithPollingTimeout(25*time.Second))); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// chromium finds Debian's Chromium. CI installs it (.ci/run); elsewhere the
// test is skipped without it.
func chromium(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed; .ci/run installs it")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// TestBrowserChat drives two pages in headless Chromium: they pick nicks,
// join a room, chat, see each other in the member list; the server restarts
// while one page is cut off, and that page, reconnecting, gets what it
// missed. A screenshot is kept (PARLEY_E2E_OUT, default reports/e2e).
func TestBrowserChat(t *testing.T) { browserChat(t, false) }

// TestBrowserChatPhone is TestBrowserChat at a phone's size (390x844,
// touch), where the lists are drawers.
func TestBrowserChatPhone(t *testing.T) { browserChat(t, true) }

func browserChat(t *testing.T, phone bool) {
	prefix := "" // of the screenshots' names
	if phone {
		prefix = "phone-flow-"
	}
	logging.SetLevel(logging.LevelNone)
	exe := chromium(t)
	// A fixed port, so the restarted server is at the same address.
	addr := freeAddr(t)
	srv := chatServer(t, addr)
	defer func() { stop(srv) }()
	url := "http://" + addr + "/#e2e"

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 760),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	// The first run on a tab starts it (and the browser) and must not carry
	// a timeout: the browser would die with it.
	ctxA, cancelA := chromedp.NewContext(allocCtx)
	defer cancelA()
	if err := chromedp.Do(ctxA); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	ctxB, cancelB := chromedp.NewContext(ctxA) // a second tab in the same browser
	defer cancelB()
	if err := chromedp.Do(ctxB); err != nil {
		t.Fatalf("open a second tab: %v", err)
	}
	if phone {
		for _, ctx := range []context.Context{ctxA, ctxB} {
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The pages' uncaught exceptions, to tell in a failure.
	var jsMu sync.Mutex
	var jsErrors []string
	for _, ctx := range []context.Context{ctxA, ctxB} {
		if err := chromedp.Listen(ctx, func(ev any) {
			if e, ok := ev.(*cdpruntime.EventExceptionThrown); ok && e.ExceptionDetails != nil {
				jsMu.Lock()
				d := e.ExceptionDetails
				msg := d.Text
				if d.Exception != nil {
					msg += " " + d.Exception.Description
				}
				jsErrors = append(jsErrors, fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber+1, msg))
				jsMu.Unlock()
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	run := func(ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(c, actions...); err != nil {
			jsMu.Lock()
			defer jsMu.Unlock()
			t.Fatalf("%s: %v (page exceptions: %q)", what, err, jsErrors)
		}
	}
	// waitJS polls a JavaScript condition in the page.
	waitJS := func(ctx context.Context, what, cond string) {
		t.Helper()
		run(ctx, what, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond),
			chromedp.WithPollingTimeout(25*time.Second)))
	}
	hasLine := func(text string) string {
		return fmt.Sprintf(`[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes(%q))`, text)
	}
	say := func(ctx context.Context, text string) {
		t.Helper()
		run(ctx, "say "+text, chromedp.SetValue(chromedp.CSS("#input"), text), chromedp.Click(chromedp.CSS("#send")))
	}

	// Both pages open the room from the URL (#e2e) and pick nicks.
	for _, p := range []struct {
		ctx  context.Context
		nick string
	}{{ctxA, "alice"}, {ctxB, "bob"}} {
		run(p.ctx, "open the page", chromedp.Navigate(url))
		waitJS(p.ctx, "connected", `document.querySelector("#status").className === "open"`)
		waitJS(p.ctx, "in #e2e", `document.querySelector("#title").textContent === "#e2e"`)
		run(p.ctx, "set nick", chromedp.SetValue(chromedp.CSS("#nick"), p.nick), submit("#nick-form"))
		waitJS(p.ctx, "nick taken into use", fmt.Sprintf(`document.querySelector("#status").textContent === "connected as %s"`, p.nick))
	}
	say(ctxA, "hello bob")
	waitJS(ctxB, "bob sees alice's message", hasLine("alice")+" && "+hasLine("hello bob"))
	waitJS(ctxA, "alice's own message is marked", `[...document.querySelectorAll("#messages li.own")].some(li => li.textContent.includes("hello bob"))`)
	for _, p := range []struct {
		ctx  context.Context
		peer string
	}{{ctxA, "bob"}, {ctxB, "alice"}} {
		waitJS(p.ctx, "member list shows "+p.peer,
			fmt.Sprintf(`[...document.querySelectorAll("#member-list li")].some(li => li.textContent.trim() === %q)`, p.peer))
	}

	// A third user, in a browser context of their own (their own storage):
	// everyone counts three, carol hears the room, and alice hears carol.
	ctxCarol, cancelCarol := chromedp.NewContext(ctxA, chromedp.WithNewBrowserContext())
	defer cancelCarol()
	if err := chromedp.Do(ctxCarol); err != nil {
		t.Fatalf("open carol's browser context: %v", err)
	}
	if phone {
		run(ctxCarol, "carol's phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	}
	run(ctxCarol, "carol opens the page", chromedp.Navigate(url))
	waitJS(ctxCarol, "carol is connected", `document.querySelector("#status").className === "open"`)
	run(ctxCarol, "carol picks her nick", chromedp.SetValue(chromedp.CSS("#nick"), "carol"), submit("#nick-form"))
	waitJS(ctxCarol, "carol is carol", `document.querySelector("#status").textContent === "connected as carol"`)
	for _, ctx := range []context.Context{ctxA, ctxB, ctxCarol} {
		waitJS(ctx, "three in #e2e", `document.querySelector("#count").textContent === "(3)" &&
			["alice", "bob", "carol"].every(n => [...document.querySelectorAll("#member-list li")].some(li => li.textContent.trim() === n))`)
	}
	say(ctxB, "welcome carol")
	waitJS(ctxCarol, "carol hears bob", hasLine("welcome carol"))
	say(ctxCarol, "hi all")
	waitJS(ctxA, "alice hears carol", hasLine("hi all"))
	cancelCarol()
	waitJS(ctxA, "carol left", `document.querySelector("#count").textContent === "(2)"`)
	// Clicking a member opens a DM with them: it is listed, the message
	// reaches them, and the page keeps working (rooms joined later still
	// appear) without an exception.
	run(ctxA, "click bob in the member list", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("#member-list li button")].find(b => b.textContent.trim() === "bob").click()`))
	waitJS(ctxA, "a DM with bob is open", `document.querySelector("#title").textContent === "@bob"`)
	waitJS(ctxA, "and listed", `[...document.querySelectorAll("#dms li")].some(li => li.textContent.includes("@bob"))`)
	say(ctxA, "psst, bob")
	waitJS(ctxB, "bob has the DM listed", `[...document.querySelectorAll("#dms li")].some(li => li.textContent.includes("@alice"))`)
	run(ctxB, "bob opens it", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("#dms li button")].find(b => b.textContent.includes("@alice")).click()`))
	waitJS(ctxB, "bob reads it", hasLine("psst, bob"))
	run(ctxA, "alice joins another room", chromedp.SetValue(chromedp.CSS("#join"), "later"), submit("#join-form"))
	waitJS(ctxA, "the room is listed", `[...document.querySelectorAll("#rooms li")].some(li => li.textContent.includes("#later"))`)
	// Unread badges count what comes in another room.
	waitJS(ctxA, "alice is in #later", `document.querySelector("#title").textContent === "#later"`)
	run(ctxB, "bob in #e2e", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("#rooms li button.item")].find(b => b.textContent === "#e2e").click()`))
	waitJS(ctxB, "bob is in #e2e", `document.querySelector("#title").textContent === "#e2e"`)
	say(ctxB, "while you were in #later")
	waitJS(ctxA, "#e2e shows one unread", `(() => { const li = [...document.querySelectorAll("#rooms li")].find(li => li.textContent.includes("#e2e"));
		return li && li.querySelector(".badge") && li.querySelector(".badge").textContent === "1"; })()`)
	// Alt+Up/Down walks the conversations, the focus staying in the box.
	run(ctxA, "Alt+Up", chromedp.Focus(chromedp.CSS("#input")), chromedp.KeyEvent(kb.ArrowUp, chromedp.KeyModifiers(chromedp.ModifierAlt)))
	waitJS(ctxA, "another conversation, focus kept", `document.querySelector("#title").textContent !== "#later" && document.activeElement === document.querySelector("#input")`)
	// Leaving a room takes it off the list.
	run(ctxA, "leave #later", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("#rooms li")].find(li => li.textContent.includes("#later")).querySelector("button.leave").click()`))
	waitJS(ctxA, "#later is gone", `![...document.querySelectorAll("#rooms li")].some(li => li.textContent.includes("#later"))`)
	run(ctxA, "rejoin #later", chromedp.SetValue(chromedp.CSS("#join"), "later"), submit("#join-form"))
	waitJS(ctxA, "#later is back", `[...document.querySelectorAll("#rooms li")].some(li => li.textContent.includes("#later"))`)
	if phone {
		// The Members drawer closes when a member is picked: it used to stay
		// over the DM.
		run(ctxB, "open Members", chromedp.Click(chromedp.CSS("#toggle-members")))
		waitJS(ctxB, "the drawer is open", `document.querySelector("#members").classList.contains("open")`)
		run(ctxB, "pick alice", chromedp.Evaluate[chromedp.Void](
			`[...document.querySelectorAll("#member-list li button")].find(b => b.textContent.trim() === "alice").click()`))
		waitJS(ctxB, "the DM, not the drawer", `document.querySelector("#title").textContent === "@alice" && !document.querySelector("#members").classList.contains("open") &&
			document.querySelector("#toggle-members").getAttribute("aria-expanded") === "false"`)
	}
	run(ctxA, "back to #e2e", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("#rooms li button.item")].find(b => b.textContent === "#e2e").click()`))
	run(ctxB, "bob back to #e2e", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("#rooms li button.item")].find(b => b.textContent === "#e2e").click()`))
	waitJS(ctxA, "alice is in #e2e", `document.querySelector("#title").textContent === "#e2e"`)
	waitJS(ctxB, "bob is in #e2e", `document.querySelector("#title").textContent === "#e2e"`)

	// A draft stays with its conversation.
	clickRoom := func(ctx context.Context, room string) {
		t.Helper()
		run(ctx, "open "+room, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
			`[...document.querySelectorAll("#rooms li button.item")].find(b => b.textContent === %q).click()`, room)))
		waitJS(ctx, "in "+room, fmt.Sprintf(`document.querySelector("#title").textContent === %q`, room))
	}
	run(ctxA, "a draft in #e2e", chromedp.SetValue(chromedp.CSS("#input"), "draft for e2e"))
	clickRoom(ctxA, "#later")
	waitJS(ctxA, "#later has an empty box", `document.querySelector("#input").value === ""`)
	clickRoom(ctxA, "#e2e")
	waitJS(ctxA, "the draft is back", `document.querySelector("#input").value === "draft for e2e"`)

	// Text over the server's limit in bytes (1,500 "é" are 3,000 bytes)
	// is held back, not sent and refused.
	run(ctxA, "3,000 bytes", chromedp.Evaluate[chromedp.Void](`(() => { const i = document.querySelector("#input");
		i.value = "é".repeat(1500); i.dispatchEvent(new Event("input")); })()`))
	waitJS(ctxA, "send is off and the limit said", `document.querySelector("#send").disabled &&
		!document.querySelector("#limit").hidden && document.querySelector("#limit").textContent.includes("1000 bytes too long")`)
	run(ctxA, "clear", chromedp.Evaluate[chromedp.Void](`(() => { const i = document.querySelector("#input");
		i.value = ""; i.dispatchEvent(new Event("input")); })()`))

	// 30 messages typed faster than the rate limit all arrive, in order.
	run(ctxA, "30 quick sends", chromedp.Evaluate[chromedp.Void](`(() => { const i = document.querySelector("#input"), f = document.querySelector("#composer");
		for (let k = 0; k < 30; k++) { i.value = "quick " + k; f.requestSubmit(); } })()`))
	waitJS(ctxB, "bob gets all 30", `[...document.querySelectorAll("#messages li")].filter(li => /quick \d+$/.test(li.textContent)).length === 30`)
	waitJS(ctxA, "and alice sees no refusal", `![...document.querySelectorAll("#messages li.error")].some(li => li.textContent.includes("slow down"))`)

	// A DM partner who changes nick keeps the conversation.
	run(ctxB, "bob becomes robert", chromedp.SetValue(chromedp.CSS("#nick"), "robert"), submit("#nick-form"))
	waitJS(ctxA, "the DM follows the new nick", `[...document.querySelectorAll("#dms li")].some(li => li.textContent.includes("@robert"))`)
	run(ctxA, "open it", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("#dms li button")].find(b => b.textContent.includes("@robert")).click()`))
	say(ctxA, "still there, robert?")
	waitJS(ctxB, "robert gets it", `[...document.querySelectorAll("#dms li")].some(li => li.textContent.includes("@alice"))`)
	run(ctxB, "bob is bob again", chromedp.SetValue(chromedp.CSS("#nick"), "bob"), submit("#nick-form"))
	waitJS(ctxB, "named bob", `document.querySelector("#status").textContent === "connected as bob"`)
	waitJS(ctxA, "alice's DM follows him back", `[...document.querySelectorAll("#dms li")].some(li => li.textContent.includes("@bob"))`)
	clickRoom(ctxA, "#e2e")
	run(ctxA, "clear the draft", chromedp.Evaluate[chromedp.Void](`document.querySelector("#input").value = ""`))
	jsMu.Lock()
	if len(jsErrors) > 0 {
		t.Fatalf("page exceptions: %q", jsErrors)
	}
	jsMu.Unlock()

	// Shift+Enter starts a new line; Enter sends. Messages sit under a
	// separator naming their day.
	run(ctxA, "two lines", chromedp.Focus(chromedp.CSS("#input")), chromedp.SendKeys(chromedp.CSS("#input"), "line one"),
		chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierShift)), chromedp.SendKeys(chromedp.CSS("#input"), "line two"),
		chromedp.KeyEvent(kb.Enter))
	waitJS(ctxB, "one message of two lines", `[...document.querySelectorAll("#messages li .text")].some(s => s.textContent === "line one\nline two")`)
	waitJS(ctxB, "under today's separator", `[...document.querySelectorAll("#messages li.day")].some(d => d.textContent === new Date().toLocaleDateString([], { weekday: "long", month: "long", day: "numeric", year: "numeric" }))`)

	// A DM or a mention while the tab is hidden: a count in the title and
	// a badge on the icon, cleared when the reader comes back.
	hide := func(ctx context.Context, hidden bool) {
		run(ctx, "visibility", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
			Object.defineProperty(document, "hidden", { configurable: true, get: () => %v });
			document.dispatchEvent(new Event("visibilitychange")); })()`, hidden)))
	}
	hide(ctxB, true)
	run(ctxA, "open the DM with bob", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("#dms li button")].find(b => b.textContent.includes("@bob")).click()`))
	// Typing shows in a DM too.
	run(ctxB, "bob opens the DM with alice", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("#dms li button")].find(b => b.textContent.includes("@alice")).click()`))
	// Alice keeps typing (a notice goes out at most every 1.5 s) until bob
	// sees it.
	for deadline := time.Now().Add(20 * time.Second); ; {
		run(ctxA, "alice types", chromedp.SendKeys(chromedp.CSS("#input"), "a"))
		c, cancel := context.WithTimeout(ctxB, 5*time.Second)
		seen, err := chromedp.Run(c, chromedp.Evaluate[bool](`document.querySelector("#typing").textContent === "alice is typing…"`))
		cancel()
		if err == nil && seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob never saw alice typing (%v)", err)
		}
		time.Sleep(250 * time.Millisecond) // a keystroke's pace
	}
	run(ctxA, "clear", chromedp.Evaluate[chromedp.Void](`document.querySelector("#input").value = ""`))
	run(ctxB, "bob back to #e2e", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("#rooms li button.item")].find(b => b.textContent === "#e2e").click()`))
	say(ctxA, "are you there?")
	waitJS(ctxB, "the title counts it", `document.title === "(1) Parley" && document.querySelector("link[rel=icon]").href.startsWith("data:image/png")`)
	hide(ctxB, false)
	waitJS(ctxB, "and forgets it on return", `document.title === "Parley"`)
	run(ctxA, "back to #e2e", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("#rooms li button.item")].find(b => b.textContent === "#e2e").click()`))

	// Links (http and https only) are clickable and open apart; a mention
	// of the reader is highlighted; a right-to-left line reads so.
	say(ctxA, "see https://example.com/a?b=1, and javascript:alert(1), @bob: שלום")
	waitJS(ctxB, "the link is a link", `(() => { const a = [...document.querySelectorAll("#messages li a")].find(a => a.href === "https://example.com/a?b=1");
		return a && a.rel.includes("noopener") && a.target === "_blank"; })()`)
	waitJS(ctxB, "javascript: is not", `![...document.querySelectorAll("#messages li a")].some(a => a.href.startsWith("javascript"))`)
	waitJS(ctxB, "bob sees the mention", `[...document.querySelectorAll("#messages li.mention mark")].some(m => m.textContent === "@bob")`)
	waitJS(ctxA, "alice's own line is no mention of her", `![...document.querySelectorAll("#messages li.own.mention")].length`)
	waitJS(ctxB, "text takes its direction from itself", `[...document.querySelectorAll("#messages li .text")].every(s => s.dir === "auto")`)
	waitJS(ctxB, "hints are readable (#57606a: 7.5:1)", `getComputedStyle(document.querySelector(".hint")).color === "rgb(87, 96, 106)"`)

	// Text is never rendered as HTML.
	say(ctxB, "<b>not bold</b>")
	waitJS(ctxA, "markup shown as text", hasLine("<b>not bold</b>")+` && document.querySelectorAll("#messages b").length === 0`)

	// Cut bob's page off (its sockets fail as if offline), restart the
	// server, let alice reconnect and speak, then bring bob back.
	run(ctxB, "cut bob off", chromedp.Evaluate[chromedp.Void](`(() => {
		const WS = window.WebSocket;
		window.__offline = true;
		window.WebSocket = function (u) { return new WS(window.__offline ? "ws://127.0.0.1:1/" : u); };
		window.WebSocket.OPEN = WS.OPEN;
	})()`))
	// In the lobby, which every page joins on connect: the page's state
	// holds its lines while another room is on screen.
	lobby := `state.convs.get("room:lobby").lines.filter(l => l.kind === "system")`
	countRenames := lobby + `.filter(l => l.text.includes("is now bob")).length`
	countArrivals := lobby + `.filter(l => l.text.endsWith(" joined") || l.text.includes("is now bob")).length`
	cctx, cancelCount := context.WithTimeout(ctxA, 10*time.Second)
	renames, err := chromedp.Run(cctx, chromedp.Evaluate[int](countRenames))
	if err != nil {
		t.Fatal(err)
	}
	arrivals, err := chromedp.Run(cctx, chromedp.Evaluate[int](countArrivals))
	cancelCount()
	if err != nil {
		t.Fatal(err)
	}
	stop(srv)
	waitJS(ctxA, "alice sees the outage", `document.querySelector("#status").className === "closed"`)
	waitJS(ctxB, "bob sees the outage", `document.querySelector("#status").className === "closed"`)
	say(ctxB, "said while offline") // kept by the page, said once it is back
	srv = chatServer(t, addr)
	waitJS(ctxA, "alice reconnects", `document.querySelector("#status").textContent === "connected as alice"`)
	waitJS(ctxA, "alice is back in #e2e", `document.querySelector("#title").textContent === "#e2e"`)
	say(ctxA, "you missed this")
	waitJS(ctxA, "the server took it", `[...document.querySelectorAll("#messages li.own")].filter(li => li.textContent.includes("you missed this")).length === 1`)
	run(ctxB, "bring bob back", chromedp.Evaluate[chromedp.Void](`window.__offline = false`))
	waitJS(ctxB, "bob reconnects", `document.querySelector("#status").textContent === "connected as bob"`)
	waitJS(ctxA, "alice hears bob come back", fmt.Sprintf("%s > %d", countArrivals, arrivals))
	waitJS(ctxA, "as bob: no guest joining, no rename", fmt.Sprintf(`%s === %d && %s.some(l => l.text === "bob joined")`, countRenames, renames, lobby))
	waitJS(ctxB, "bob gets what he missed", hasLine("you missed this"))
	waitJS(ctxA, "what bob said offline reaches alice", hasLine("said while offline"))
	waitJS(ctxB, "and comes back to bob once", `[...document.querySelectorAll("#messages li.own")].filter(li => li.textContent.includes("said while offline")).length === 1`)

	out := os.Getenv("PARLEY_E2E_OUT")
	if out == "" {
		out = filepath.Join("..", "reports", "e2e")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	sctx, cancelShot := context.WithTimeout(ctxB, 30*time.Second)
	defer cancelShot()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // quality 100 gives a PNG, less a JPEG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(out, prefix+"chat.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	t.Logf("screenshot: %s (%d bytes)", abs, len(png))

	// On a phone-sized screen the lists fold into drawers behind buttons;
	// the header keeps the room's name and both buttons on screen, even
	// with a nick of 23 characters.
	run(ctxA, "phone size", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	const longNick = "a-very-long-nickname-23"
	run(ctxA, "a long nick", chromedp.Evaluate[chromedp.Void](`document.querySelector("#toggle-nav").click()`),
		chromedp.SetValue(chromedp.CSS("#nick"), longNick), chromedp.Evaluate[chromedp.Void](`document.querySelector("#nick-form button").click()`),
		chromedp.Evaluate[chromedp.Void](`document.querySelector("#toggle-nav").click()`))
	// A tap leaves the pointer over the button: no hover colours stick.
	run(ctxA, "tap Members twice", chromedp.Click(chromedp.CSS("#toggle-members")), chromedp.Click(chromedp.CSS("#toggle-members")))
	waitJS(ctxA, "a tapped header button keeps the header's colours (no stuck hover)",
		`getComputedStyle(document.querySelector("#toggle-members")).backgroundColor === "rgba(0, 0, 0, 0)"`)
	waitJS(ctxA, "the long nick taken", fmt.Sprintf(`document.querySelector("#status").textContent === "connected as %s"`, longNick))
	waitJS(ctxA, "the room's name whole and both buttons on screen", `(() => {
		const t = document.querySelector("#title"), m = document.querySelector("#toggle-members").getBoundingClientRect(),
			n = document.querySelector("#toggle-nav").getBoundingClientRect();
		return t.textContent === "#e2e" && t.scrollWidth <= t.clientWidth && t.clientWidth > 0 &&
			m.right <= innerWidth && m.left >= 0 && n.left >= 0 && m.width > 0;
	})()`)
	waitJS(ctxA, "the room list folds away", `getComputedStyle(document.querySelector("#nav")).display === "none"`)
	run(ctxA, "open the rooms drawer", chromedp.Click(chromedp.CSS("#toggle-nav")))
	waitJS(ctxA, "the drawer opens", `getComputedStyle(document.querySelector("#nav")).display === "block" &&
		document.querySelector("#toggle-nav").getAttribute("aria-expanded") === "true"`)
	run(ctxA, "Escape closes it", chromedp.KeyEvent(kb.Escape))
	waitJS(ctxA, "closed, and announced so", `getComputedStyle(document.querySelector("#nav")).display === "none" &&
		document.querySelector("#toggle-nav").getAttribute("aria-expanded") === "false"`)
	run(ctxA, "open it again", chromedp.Click(chromedp.CSS("#toggle-nav")))
	run(ctxA, "close it", chromedp.Click(chromedp.CSS("#toggle-nav")))
	mctx, cancelMobile := context.WithTimeout(ctxA, 30*time.Second)
	defer cancelMobile()
	phonePNG, err := chromedp.Run(mctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("phone screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(out, prefix+"chat-phone.png"), phonePNG, 0o644); err != nil {
		t.Fatal(err)
	}
	// A third tab of the same browser asks for the nick a tab holds: it
	// is offered to move the chat, and taking it over stops the other tab.
	if !phone {
		run(ctxA, "desktop again", chromedp.EmulateViewport(1100, 760))
	}
	ctxC, cancelC := chromedp.NewContext(ctxA)
	defer cancelC()
	if err := chromedp.Do(ctxC); err != nil {
		t.Fatalf("open a third tab: %v", err)
	}
	run(ctxC, "open the page", chromedp.Navigate("http://"+addr+"/#e2e"))
	waitJS(ctxC, "offered to move the chat", `!!document.querySelector("#use-here")`)
	run(ctxC, "use it here", chromedp.Click(chromedp.CSS("#use-here")))
	waitJS(ctxC, "this tab has the nick", fmt.Sprintf(`document.querySelector("#status").textContent === "connected as %s"`, longNick))
	waitJS(ctxA, "the other tab stopped", `document.querySelector("#status").textContent === "moved to another tab"`)

	if !strings.HasPrefix(string(png), "\x89PNG") || len(png) < 1000 {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
}

// TestBrowserToken: the page takes a token from its URL's fragment,
// connects as the token's user (its nick field locked), keeps the token
// out of the address bar, and starts in the room the fragment names.
func TestBrowserToken(t *testing.T) {
	logging.SetLevel(logging.LevelNone)
	exe := chromium(t)
	is := authtest.New(t)
	srv := chatServerWith(t, "127.0.0.1:0", chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsAllowed})
	defer stop(srv)
	c := authtest.Claims("u-42")
	c.Nick = "Ada"
	url := "http://" + srv.Addr().String() + "/#room=signed&token=" + is.Sign(c)

	tctx, poll := browser(t, exe, 30*time.Second)
	if err := chromedp.Do(tctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	poll("signed in", `document.querySelector("#status").textContent === "connected as Ada (signed in)"`)
	poll("the nick is the token's", `document.querySelector("#nick").disabled && document.querySelector("#nick").value === "Ada"`)
	poll("the token left the address bar", `!location.href.includes("token") && sessionStorage.getItem("parley.token") !== null`)
	poll("in the fragment's room", `document.querySelector("#title").textContent === "#signed"`)
	// Long and repetitive, so that deflate shrinks it: short JSON does not
	// shrink, and goes plain.
	long := strings.Repeat("compressed both ways. ", 30)
	if err := chromedp.Do(tctx, chromedp.SetValue(chromedp.CSS("#input"), long), chromedp.Click(chromedp.CSS("#send"))); err != nil {
		t.Fatal(err)
	}
	poll("the message came back", fmt.Sprintf(`[...document.querySelectorAll("#messages li.own")].some(li => li.textContent.includes(%q))`, strings.TrimSpace(long)))
	// Dark mode, when the system asks for it.
	dark := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
		return err
	})
	if err := chromedp.Do(tctx, dark); err != nil {
		t.Fatal(err)
	}
	poll("dark", `getComputedStyle(document.body).backgroundColor === "rgb(13, 17, 23)"`)
	if st := srv.Stats(); st.DeflateClients != 1 || st.Inflated == 0 || st.Compressed == 0 {
		t.Fatalf("Chromium and permessage-deflate: %d clients, %d inflated, %d compressed", st.DeflateClients, st.Inflated, st.Compressed)
	}
}

// TestBrowserHistory: older messages load as the reader scrolls up; a
// reader scrolled up keeps their place while hundreds of messages arrive;
// the offline status counts down and Retry reconnects at once; a reload
// keeps the rooms joined.
func TestBrowserHistory(t *testing.T) {
	logging.SetLevel(logging.LevelNone)
	exe := chromium(t)
	addr := freeAddr(t)
	cfg := chat.Config{RateLimit: -1, HistoryBytes: 256 << 10}
	srv := chatServerWith(t, addr, cfg)
	defer func() { stop(srv) }()
	// 300 messages in #hist before the page comes.
	said := chattest.Connect(t, "ws://"+addr+"/ws")
	said.Send(protocol.Request{Type: protocol.TypeJoin, Room: "hist"})
	said.Expect("join")
	said.Expect("history")
	sayN := func(from, to int) {
		for i := from; i < to; i++ {
			said.Send(protocol.Request{Type: protocol.TypeSay, Room: "hist", Text: fmt.Sprintf("m %d", i)})
		}
		for i := from; i < to; i++ {
			said.Expect("message")
		}
	}
	sayN(0, 300)

	tctx, poll := browser(t, exe, 60*time.Second)
	do := func(what, js string) {
		t.Helper()
		if err := chromedp.Do(tctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	if err := chromedp.Do(tctx, chromedp.Navigate("http://"+addr+"/#hist")); err != nil {
		t.Fatal(err)
	}
	poll("in #hist with the last 100", `document.querySelector("#title").textContent === "#hist" &&
		[...document.querySelectorAll("#messages li")].some(li => li.textContent.endsWith("m 299")) &&
		![...document.querySelectorAll("#messages li")].some(li => li.textContent.endsWith("m 199"))`)
	poll("scrolling up loads the older pages, down to the first", `(() => {
		const m = document.querySelector("#messages"); m.scrollTop = 0; m.dispatchEvent(new Event("scroll"));
		return [...document.querySelectorAll("#messages li")].some(li => li.textContent.endsWith(" m 0"));
	})()`)
	poll("in order", `(() => { const n = [...document.querySelectorAll("#messages li")].map(li => li.textContent.match(/ m (\d+)$/)).filter(Boolean).map(x => +x[1]);
		return n.length === 300 && n.every((v, i) => v === i); })()`)

	// Scrolled up, 600 new messages: the reader's lines stay where they are.
	do("read from the top", `(() => { const m = document.querySelector("#messages"); m.scrollTop = 200; window.__first = document.querySelector("#messages li").textContent; window.__top = m.scrollTop; })()`)
	sayN(300, 900)
	poll("the new messages came", `document.querySelector("#jump").hidden === false && window.__first !== undefined`)
	poll("and the reader's place did not move", `(() => { const m = document.querySelector("#messages");
		return document.querySelector("#messages li").textContent === window.__first && Math.abs(m.scrollTop - window.__top) < 2; })()`)
	// Nothing was taken from above the reader: 900 lines, and scrolling to
	// the top says the room's history starts there (a burst, then older
	// pages, cut 1,011 lines to 551 and never loaded more).
	poll("all 900 lines kept while scrolled up", `[...document.querySelectorAll("#messages li")].filter(li => / m \d+$/.test(li.textContent)).length === 900`)
	poll("at the top, the start of the room", `(() => {
		const m = document.querySelector("#messages"); m.scrollTop = 0; m.dispatchEvent(new Event("scroll"));
		const s = document.querySelector("#messages li.start"); return s && s.textContent === "This is the start of the room." && m.firstElementChild === s; })()`)
	poll("back at the bottom: trimmed to 500", `(() => {
		const m = document.querySelector("#messages"); m.scrollTop = m.scrollHeight; m.dispatchEvent(new Event("scroll"));
		return [...m.querySelectorAll("li")].filter(li => / m \d+$/.test(li.textContent)).length === 500 && m.lastElementChild.textContent.endsWith(" m 899"); })()`)
	poll("and up again, older pages load from the server", `(() => {
		const m = document.querySelector("#messages"); m.scrollTop = 0; m.dispatchEvent(new Event("scroll"));
		return [...m.querySelectorAll("li")].some(li => li.textContent.endsWith(" m 300")); })()`)

	// Offline: a countdown and a Retry button; Retry reconnects at once.
	stop(srv)
	poll("counting down", `document.querySelector("#status").textContent.startsWith("offline, retrying in") && !document.querySelector("#retry").hidden`)
	srv = chatServerWith(t, addr, cfg)
	do("retry now", `document.querySelector("#retry").click()`)
	poll("back", `document.querySelector("#status").className === "open" && document.querySelector("#retry").hidden`)

	// A reload keeps the rooms joined.
	do("join another room", `(() => { document.querySelector("#join").value = "kept"; document.querySelector("#join-form").requestSubmit(); })()`)
	poll("#kept listed", `[...document.querySelectorAll("#rooms li")].some(li => li.textContent.includes("#kept"))`)
	if err := chromedp.Do(tctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	poll("still listed after a reload", `document.querySelector("#status").className === "open" &&
		[...document.querySelectorAll("#rooms li")].some(li => li.textContent.includes("#kept")) &&
		[...document.querySelectorAll("#rooms li")].some(li => li.textContent.includes("#hist"))`)
}

// TestBrowserSignIn: on a server that admits signed-in users only, the
// page cannot connect until its reader pastes a token; then it is the
// token's user, and signing out drops back.
func TestBrowserSignIn(t *testing.T) {
	logging.SetLevel(logging.LevelNone)
	exe := chromium(t)
	is := authtest.New(t)
	srv := chatServerWith(t, "127.0.0.1:0", chat.Config{Verifier: is.Verifier(), Guests: chat.GuestsRefused})
	defer stop(srv)
	c := authtest.Claims("u-7")
	c.Nick = "Grace"
	tctx, poll := browser(t, exe, 40*time.Second)
	if err := chromedp.Do(tctx, chromedp.Navigate("http://"+srv.Addr().String()+"/")); err != nil {
		t.Fatal(err)
	}
	// Refused without a token: a sign-in screen that says why, not an
	// outage retried every few seconds.
	poll("a sign-in screen", `!document.querySelector("#gate").hidden && document.querySelector("#status").textContent === "signed out" &&
		document.querySelector("#gate-reason").textContent.startsWith("token missing") && document.querySelector("#retry").hidden &&
		document.querySelector("#input").disabled`)
	if err := chromedp.Do(tctx, chromedp.SendKeys(chromedp.CSS("#gate-token"), is.Sign(c)), chromedp.Click(chromedp.CSS("#gate-form button"))); err != nil {
		t.Fatal(err)
	}
	poll("signed in", `document.querySelector("#status").textContent === "connected as Grace (signed in)" &&
		document.querySelector("#signed-as").textContent === "Signed in as Grace." && document.querySelector("#signin").hidden`)
	if err := chromedp.Do(tctx, chromedp.Click(chromedp.CSS("#signout"))); err != nil {
		t.Fatal(err)
	}
	poll("signed out: the sign-in screen again", `!document.querySelector("#gate").hidden && sessionStorage.getItem("parley.token") === null`)

	// An expired token in the link (a new load: the fragment alone would
	// not reload the page): the screen says it expired.
	expired := authtest.Claims("u-7")
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
	if err := chromedp.Do(tctx, chromedp.Navigate("http://"+srv.Addr().String()+"/?again#token="+is.Sign(expired))); err != nil {
		t.Fatal(err)
	}
	poll("the token expired", `!document.querySelector("#gate").hidden && document.querySelector("#gate-reason").textContent.startsWith("token expired")`)
}

// TestBrowserBanned: a user banned while chatting sees until when and
// why, and the composer and the member list go.
func TestBrowserBanned(t *testing.T) {
	logging.SetLevel(logging.LevelNone)
	exe := chromium(t)
	is := authtest.New(t)
	hub, err := chat.New(chat.Config{Verifier: is.Verifier(), Logger: slog.New(slog.DiscardHandler), PresenceInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := pageServer(t, "127.0.0.1:0", hub)
	defer stop(srv)
	tctx, poll := browser(t, exe, 40*time.Second)
	if err := chromedp.Do(tctx, chromedp.Navigate("http://"+srv.Addr().String()+"/#token="+is.Token("u-9"))); err != nil {
		t.Fatal(err)
	}
	poll("signed in", `document.querySelector("#status").textContent === "connected as u-9 (signed in)" && document.querySelectorAll("#member-list li").length === 1`)
	until := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	if err := hub.PutRule(context.Background(), chat.Rule{Kind: chat.RuleBanUser, Subject: "u-9", Until: until.UnixMilli(), Reason: "spam"}); err != nil {
		t.Fatal(err)
	}
	poll("the ban, its end and its reason", fmt.Sprintf(`!document.querySelector("#gate").hidden && document.querySelector("#gate-reason").textContent === "banned until %s: spam" &&
		document.querySelector("#gate-form").hidden && document.querySelector("#input").disabled && document.querySelector("#send").disabled &&
		document.querySelectorAll("#member-list li").length === 0`, until.UTC().Format(time.RFC3339)))
}
