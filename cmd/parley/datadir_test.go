package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/chattest"
	"github.com/parleyhq/parley/protocol"
)

// TestServeDataDir: `parley serve --data-dir` keeps the lobby's history and
// epoch across a restart, after SIGTERM and after SIGKILL alike: a client
// resumes from the last number it saw, with no reset, and numbering goes
// on.
func TestServeDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // made by serve
	cmd, addr := startParley(t, "--data-dir", dir)
	c := chattest.Connect(t, "ws://"+addr+"/ws")
	var want []string
	say := func(c *chattest.Client, text string) chattest.Event {
		t.Helper()
		c.Send(protocol.Request{Type: protocol.TypeSay, Room: "lobby", Text: text})
		return c.Expect("message")
	}
	first := say(c, "one")
	say(c, "two")
	want = append(want, "two")
	epoch := roomEpoch(t, "ws://"+addr+"/ws")

	for i, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		stop(t, cmd, sig)
		cmd, addr = startParley(t, "--data-dir", dir)
		if got := roomEpoch(t, "ws://"+addr+"/ws"); got != epoch {
			t.Fatalf("after %v: the lobby's epoch %d, want %d (the log was lost)", sig, got, epoch)
		}
		c := chattest.Dial(t, "ws://"+addr+"/ws")
		c.Expect("welcome")
		c.Expect("join")
		c.Expect("history")
		since := first.Seq
		c.Send(protocol.Request{Type: protocol.TypeLeave, Room: "lobby"})
		c.Expect("leave")
		c.Send(protocol.Request{Type: protocol.TypeJoin, Room: "lobby", Since: &since, Epoch: epoch})
		if j := c.Expect("join"); j.Epoch != epoch || j.Seq != first.Seq+int64(1+i) {
			t.Fatalf("after %v: join %+v, want epoch %d, seq %d", sig, j, epoch, first.Seq+int64(1+i))
		}
		if h := c.Expect("history"); !slices.Equal(h.Texts(t), want) || h.Gap {
			t.Fatalf("after %v: resumed with %q (gap %v), want %q", sig, h.Texts(t), h.Gap, want)
		}
		m := say(c, "after "+sig.String())
		want = append(want, m.Text)
		c.Close()
	}
}

// roomEpoch is the lobby's epoch as a new client's join tells it.
func roomEpoch(t *testing.T, url string) int64 {
	t.Helper()
	c := chattest.Dial(t, url)
	defer c.Close()
	c.Expect("welcome")
	return c.Expect("join").Epoch
}

// stop signals cmd and waits for it to exit.
func stop(t *testing.T, cmd *exec.Cmd, sig syscall.Signal) {
	t.Helper()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("parley serve did not exit within 30 s of %v", sig)
	}
}

// TestServeDataDirEdits: edits and deletes are entries of the room's log:
// after a SIGKILL and a restart from --data-dir the history holds the
// edited text and the tombstone, with the events where they were.
func TestServeDataDirEdits(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cmd, addr := startParley(t, "--data-dir", dir)
	c := chattest.Connect(t, "ws://"+addr+"/ws")
	for _, req := range []protocol.Request{
		{Type: protocol.TypeSay, Room: "lobby", Text: "my password is hunter2"},
		{Type: protocol.TypeSay, Room: "lobby", Text: "tpyo"},
		{Type: protocol.TypeDelete, Room: "lobby", Seq: 1},
		{Type: protocol.TypeEdit, Room: "lobby", Seq: 2, Text: "typo"},
	} {
		c.Send(req)
		c.ExpectOneOf("message", "edited", "deleted")
	}
	stop(t, cmd, syscall.SIGKILL)
	_, addr = startParley(t, "--data-dir", dir)
	d := chattest.Dial(t, "ws://"+addr+"/ws")
	d.Expect("welcome")
	d.Expect("join")
	h := d.Expect("history").Entries(t)
	var got []string
	for _, e := range h {
		got = append(got, fmt.Sprintf("%d %s %q", e.Seq, e.Type, e.Text))
	}
	want := []string{`1 message ""`, `2 message "typo"`, `3 deleted ""`, `4 edited "typo"`} // nothing of hunter2
	if !slices.Equal(got, want) || h[0].Deleted == 0 || h[1].Edited == 0 {
		t.Fatalf("history after a restart: %q, want %q", got, want)
	}
}
