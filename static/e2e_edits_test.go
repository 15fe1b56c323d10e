package static_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/lesismal/nbio/logging"

	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/protocol"
)

// page is one person's browser on the chat, for the tests below.
type page struct {
	t    *testing.T
	name string
	ctx  context.Context
}

// people starts a headless Chromium for a test and returns its first
// tab's context. A test's people share it, each in a browser context of
// its own (openPage): a Chromium each, three on two cores, started badly
// at times (a socket dropped at once, a page that never ran its script).
func people(t *testing.T, exe string) context.Context {
	t.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), chromedp.ExecPath(exe), chromedp.Headless,
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 760),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true))
	ctx, cancel := chromedp.NewContext(allocCtx)
	if err := chromedp.Do(ctx); err != nil { // the first run starts the browser, without a timeout
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// openPage opens url for a person of its own (a browser context: its own
// storage, as another person's browser) in the browser of people,
// phone-sized if asked, and waits until it is connected. close closes
// its tab.
func openPage(t *testing.T, browser context.Context, name, url string, phone bool) (p *page, close func()) {
	t.Helper()
	tab, cancelTab := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	ctx, cancel := context.WithTimeout(tab, 3*time.Minute)
	t.Cleanup(func() { cancel(); cancelTab() })
	p = &page{t: t, name: name, ctx: ctx}
	if phone {
		p.do("phone size", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	}
	p.do("open the page", chromedp.Navigate(url))
	p.wait("connected", `document.querySelector("#status").className === "open"`)
	return p, cancelTab
}

func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, what, err)
	}
}

func (p *page) js(what, js string) { p.t.Helper(); p.do(what, chromedp.Evaluate[chromedp.Void](js)) }

// wait polls a JavaScript condition in the page (25 s at most); a failure
// tells what the page showed.
func (p *page) wait(what, cond string) {
	p.t.Helper()
	err := chromedp.Do(p.ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(25*time.Second)))
	if err == nil {
		return
	}
	shown, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.querySelector("#status").textContent + " | " +
		[...document.querySelectorAll("#messages li")].map(l => l.className + ": " + l.textContent).join("; ")`))
	p.t.Fatalf("%s: %s: %v\nthe page: %s", p.name, what, err, shown)
}

// nick takes a nick and waits until it is in use.
func (p *page) nick(n string) {
	p.t.Helper()
	p.do("set nick "+n, chromedp.SetValue(chromedp.CSS("#nick"), n), submit("#nick-form"))
	p.wait("nick "+n, fmt.Sprintf(`document.querySelector("#status").textContent === "connected as %s"`, n))
}

// say sends text from the composer.
func (p *page) say(text string) {
	p.t.Helper()
	p.js("say "+text, fmt.Sprintf(`(() => { document.querySelector("#input").value = %q; document.querySelector("#composer").requestSubmit(); })()`, text))
}

// line is a JavaScript expression for the message line whose text holds s.
func line(s string) string {
	return fmt.Sprintf(`[...document.querySelectorAll("#messages li[data-seq]")].find(li => li.querySelector(".text").textContent.includes(%q))`, s)
}

// shot keeps a screenshot (PARLEY_E2E_OUT, default reports/e2e).
func (p *page) shot(file string) {
	p.t.Helper()
	out := os.Getenv("PARLEY_E2E_OUT")
	if out == "" {
		out = filepath.Join("..", "reports", "e2e")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		p.t.Fatal(err)
	}
	png, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(out, file), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// TestBrowserEdits: three people in real Chromium. Alice edits a typo,
// Bob replies to her line, Alice deletes it: everyone's page shows the
// edit, the quote, the tombstone and the quote emptied. Lines are "(you)"
// by identity: when Alice leaves and Carol takes the nick "alice", none
// of the old alice's lines is Carol's, nor is the old "@alice" a mention
// of her.
func TestBrowserEdits(t *testing.T) { browserEdits(t, false) }

// TestBrowserEditsPhone is TestBrowserEdits at a phone's size, where the
// line's buttons are always shown (no hover).
func TestBrowserEditsPhone(t *testing.T) { browserEdits(t, true) }

func browserEdits(t *testing.T, phone bool) {
	logging.SetLevel(logging.LevelNone)
	exe := chromium(t)
	addr := freeAddr(t)
	srv := chatServer(t, addr)
	defer func() { stop(srv) }()
	url := "http://" + addr + "/#edits"
	b := people(t, exe)
	alice, closeAlice := openPage(t, b, "alice", url, phone)
	bob, _ := openPage(t, b, "bob", url, phone)
	alice.nick("alice")
	bob.nick("bob")

	alice.say("helo wrold")
	for _, p := range []*page{alice, bob} {
		p.wait("alice's line", line("helo wrold")+` !== undefined`)
	}
	alice.wait("her line is hers", line("helo wrold")+`.classList.contains("own") && `+line("helo wrold")+`.querySelector(".you") !== null`)
	bob.wait("not his", `!`+line("helo wrold")+`.classList.contains("own") && `+line("helo wrold")+`.querySelector(".edit") === null`)

	alice.js("edit it", line("helo wrold")+`.querySelector("button.edit").click()`)
	alice.wait("the composer holds the text", `document.querySelector("#input").value === "helo wrold" && !document.querySelector("#compose-state").hidden`)
	alice.js("fix it", `(() => { document.querySelector("#input").value = "hello world"; document.querySelector("#composer").requestSubmit(); })()`)
	for _, p := range []*page{alice, bob} {
		p.wait("the edit", line("hello world")+`?.querySelector(".edited")?.textContent === "(edited)" && `+line("helo wrold")+` === undefined`)
	}

	bob.js("reply to alice", line("hello world")+`.querySelector("button.reply").click()`)
	bob.wait("replying", `document.querySelector("#compose-what").textContent.startsWith("Replying to alice")`)
	bob.say("hi alice")
	for _, p := range []*page{alice, bob} {
		p.wait("the reply quotes her", line("hi alice")+`?.querySelector(".quote")?.textContent === "↪ alice: hello world"`)
	}
	bob.wait("the composer is back to saying", `document.querySelector("#compose-state").hidden`)

	// Reactions: bob picks 👍 on alice's line, alice adds hers with the chip.
	bob.js("react", line("hello world")+`.querySelector("button.react").click()`)
	bob.js("pick 👍", line("hello world")+`.querySelector("button.pick").click()`)
	for _, p := range []*page{alice, bob} {
		p.wait("one 👍", line("hello world")+`?.querySelector(".chip")?.textContent === "👍 1"`)
	}
	alice.js("add hers", line("hello world")+`.querySelector(".chip").click()`)
	for _, p := range []*page{alice, bob} {
		p.wait("two 👍, named", line("hello world")+`?.querySelector(".chip")?.textContent === "👍 2" && `+line("hello world")+`.querySelector(".chip").title === "bob, alice"`)
		p.wait("and no message missed", `![...document.querySelectorAll("#messages li.system")].some(li => li.textContent.startsWith("missed"))`)
	}
	if !phone {
		bob.shot("edits.png")
	} else {
		bob.shot("edits-phone.png")
	}

	alice.js("delete it", line("hello world")+`.querySelector("button.delete").click()`)
	for _, p := range []*page{alice, bob} {
		p.wait("the tombstone", `[...document.querySelectorAll("#messages li.deleted")].some(li => li.textContent.includes("message deleted")) && `+line("hello world")+` === undefined`)
		p.wait("the quote emptied", line("hi alice")+`.querySelector(".quote").textContent === "↪ alice: message deleted"`)
	}

	// A reload is no leaving and joining.
	bob.js("count the notices", `window.__notices = document.querySelectorAll("#messages li.system").length`)
	alice.do("reload", chromedp.Reload())
	alice.wait("back as alice", `document.querySelector("#status").textContent === "connected as alice"`)
	bob.say("welcome back?")
	alice.wait("alice hears bob after her reload", line("welcome back?")+` !== undefined`)
	bob.wait("no 'alice left', no 'alice joined', no rename", line("welcome back?")+` !== undefined &&
		document.querySelectorAll("#messages li.system").length === window.__notices`)

	// Identity, not nick: alice leaves, carol takes "alice".
	bob.say("@alice are you there?")
	alice.wait("the mention reached alice", line("are you there")+`?.classList.contains("mention")`)
	closeAlice() // she closes her tab
	bob.wait("alice left", `[...document.querySelectorAll("#messages li.system")].some(li => li.textContent === "alice left")`)
	carol, _ := openPage(t, b, "carol", url, phone)
	carol.nick("alice")
	carol.wait("the old lines are there", line("are you there")+` !== undefined && `+line("hi alice")+` !== undefined`)
	carol.wait("none of them is hers, nor a mention of her", `document.querySelectorAll("#messages li.own").length === 0 &&
		document.querySelectorAll("#messages li.mention").length === 0 && document.querySelectorAll("#messages li button.edit").length === 0`)
	carol.say("I am the new alice")
	carol.wait("her own line is", line("the new alice")+`?.classList.contains("own")`)
	bob.wait("the reactions' entries counted: no message said missed", line("the new alice")+` !== undefined &&
		![...document.querySelectorAll("#messages li.system")].some(li => li.textContent.startsWith("missed"))`)
}

// TestBrowserFindAndSearch: the page finds rooms by part of their name
// (with their member counts) and joins one with a click, and searches
// the room it shows.
func TestBrowserFindAndSearch(t *testing.T) {
	logging.SetLevel(logging.LevelNone)
	exe := chromium(t)
	addr := freeAddr(t)
	srv := chatServer(t, addr)
	defer func() { stop(srv) }()
	other := chattest.Connect(t, "ws://"+addr+"/ws")
	other.Send(protocol.Request{Type: protocol.TypeJoin, Room: "dev-ops"})
	other.Expect("join")
	other.Expect("history")
	other.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: "deploy at noon"})
	other.Expect("message")
	p, _ := openPage(t, people(t, exe), "reader", "http://"+addr+"/", false)
	p.js("find dev", `(() => { document.querySelector("#find").value = "DEV"; document.querySelector("#find-form").requestSubmit(); })()`)
	p.wait("found, with its count", `document.querySelector("#found-title").textContent === "Rooms with “DEV”:" &&
		[...document.querySelectorAll("#found li")].map(li => li.textContent).join() === "#dev-ops (1)"`)
	p.js("join it", `document.querySelector("#found li button").click()`)
	p.wait("in #dev-ops", `document.querySelector("#title").textContent === "#dev-ops"`)
	p.js("back to the lobby", `[...document.querySelectorAll("#rooms li button.item")].find(b => b.textContent === "#lobby").click()`)
	p.js("search noon", `(() => { document.querySelector("#search").value = "NOON"; document.querySelector("#search-form").requestSubmit(); })()`)
	p.wait("the message found", `document.querySelector("#found-title").textContent === "Found in #lobby for “NOON”:" &&
		document.querySelector("#found li").textContent.endsWith("deploy at noon")`)
}
