package static_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/lesismal/nbio/logging"
)

// axeScript is axe-core, installed by npm ci --prefix static/axe (CI
// does). Elsewhere the check is skipped without it.
func axeScript(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("axe/node_modules/axe-core/axe.min.js")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("axe-core is not installed (.ci/run installs it: npm ci --prefix static/axe): %v", err)
		}
		t.Skip("axe-core is not installed: npm ci --prefix static/axe")
	}
	return string(b)
}

// axe runs axe-core in p's page and fails on any serious or critical
// violation, naming each with the elements at fault.
func (p *page) axe(what, script string) {
	p.t.Helper()
	p.js("load axe", script)
	var found string
	if err := chromedp.Do(p.ctx, chromedp.Evaluate[chromedp.Void](`window.__axe = null; axe.run(document, {resultTypes: ["violations"]}).then(r => { window.__axe = r.violations
		.filter(v => v.impact === "serious" || v.impact === "critical")
		.map(v => v.id + " (" + v.impact + "): " + v.help + ": " + v.nodes.map(n => n.target.join(" ")).join(", ")).join("\n"); })`)); err != nil {
		p.t.Fatalf("%s: run axe: %v", p.name, err)
	}
	p.wait("axe's answer", `window.__axe !== null`)
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](`window.__axe`))
	if err != nil {
		p.t.Fatal(err)
	}
	found = v
	if found != "" {
		p.t.Errorf("%s: %s: axe finds serious or critical violations:\n%s", p.name, what, found)
	}
}

// TestAccessibility: axe-core, in the real browser, finds no serious or
// critical violation on the page: a room with messages (a day separator,
// reactions, a reply), a DM, a drawer open on a phone.
func TestAccessibility(t *testing.T) {
	logging.SetLevel(logging.LevelNone)
	exe := chromium(t)
	script := axeScript(t)
	addr := freeAddr(t)
	srv := chatServer(t, addr)
	defer func() { stop(srv) }()
	b := people(t, exe)
	for _, phone := range []bool{false, true} {
		name := map[bool]string{false: "desktop", true: "phone"}[phone]
		p, _ := openPage(t, b, name, "http://"+addr+"/#a11y", phone)
		p.nick(name + "-user")
		p.say("hello")
		p.wait("the line", line("hello")+` !== undefined`)
		p.js("reply", line("hello")+`.querySelector("button.reply").click()`)
		p.say("a reply")
		p.wait("the reply", line("a reply")+` !== undefined`)
		p.axe("a room", script)
		p.js("a DM", `select(conv("dm:someone").key)`)
		p.wait("in the DM, whose two people are listed", `document.querySelector("#title").textContent.startsWith("@") &&
			document.querySelector("#members-title").textContent === "Conversation" && document.querySelectorAll("#member-list li").length === 2`)
		p.axe("a DM", script)
		p.wait("the page keeps its heading", `getComputedStyle(document.querySelector("h1")).display !== "none"`)
		if !phone {
			continue
		}
		// The room left for the DM gets a message: the menu button says so.
		p.js("a message in #a11y", `(() => { const c = conv("room:a11y"); c.unread = 1; renderLists(); })()`)
		p.wait("the menu button's unread hint", `document.querySelector("#toggle-nav").classList.contains("unread") &&
			document.querySelector("#toggle-nav").getAttribute("aria-label") === "Rooms, 1 unread"`)
		p.js("open the rooms drawer", `document.querySelector("#toggle-nav").click()`)
		p.wait("open, and focus in it", `document.querySelector("#nav").classList.contains("open") && document.querySelector("#nav").contains(document.activeElement)`)
		p.axe("a drawer open", script)
		p.js("tap outside it", `document.querySelector("#messages").dispatchEvent(new PointerEvent("pointerdown", {bubbles: true}))`)
		p.wait("closed", `!document.querySelector("#nav").classList.contains("open") && document.querySelector("#toggle-nav").getAttribute("aria-expanded") === "false"`)
		// The keyboard opens (the viewport 844 -> 470 px): the newest line
		// stays in view.
		p.js("back to the room", `select("room:a11y")`)
		for i := range 30 {
			p.say(fmt.Sprintf("line %d", i))
		}
		p.wait("the last line", line("line 29")+` !== undefined && atBottom()`)
		p.do("the keyboard opens", chromedp.EmulateViewport(390, 470, chromedp.EmulateMobile))
		p.wait("the newest line in view", `(() => { const m = document.querySelector("#messages").getBoundingClientRect(),
			l = [...document.querySelectorAll("#messages li")].pop().getBoundingClientRect(); return innerHeight <= 480 && l.bottom <= m.bottom + 1 && l.top >= m.top; })()`)
	}
}
