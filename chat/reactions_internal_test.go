package chat

import (
	"fmt"
	"testing"
)

// TestReactionsBounded: a room holds at most maxRoomReactors reactions on
// all its messages; past it a new one is dropped, a taken-back one makes
// room, and a message leaving the history gives its reactions' room back.
func TestReactionsBounded(t *testing.T) {
	h, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := newRoom("lobby", nil, historyLimits{count: 100, bytes: 1 << 20})
	const msgs = 10
	for seq := int64(1); seq <= msgs; seq++ {
		r.appendHistory(seq, []byte(`{"from":"alice","text":"hi","ts":1}`), 0)
	}
	seq := int64(msgs)
	react := func(target int64, sid, emoji string) {
		seq++
		p := published{React: target, Emoji: emoji, From: "g", SID: sid, TS: 1}
		h.applyReaction(r, seq, &p)
	}
	// 5 emoji x 500 reactors on each message: 25,000 asked for.
	for m := int64(1); m <= msgs; m++ {
		for e := range 5 {
			for i := range maxReactors {
				react(m, fmt.Sprintf("%011d", i), string(rune('😀'+e)))
			}
		}
	}
	if r.reactors != maxRoomReactors {
		t.Fatalf("%d reactions held, want the cap %d", r.reactors, maxRoomReactors)
	}
	held := 0
	for _, list := range r.reacts {
		for _, e := range list {
			held += len(e.who)
		}
	}
	if held != maxRoomReactors {
		t.Fatalf("counted %d, hold %d", r.reactors, held)
	}
	react(1, fmt.Sprintf("%011d", 0), "😀") // taken back
	react(9, "someone-new", "😀")           // takes its place
	if r.reactors != maxRoomReactors || len(r.reacts[9]) != 1 {
		t.Fatalf("after one taken back and one new: %d held, message 9 has %d emoji", r.reactors, len(r.reacts[9]))
	}
	r.keep.count, r.keep.window = 1, 0
	r.trimHistory(0) // messages 1-9 leave
	if len(r.reacts) != 0 || r.reactors != 0 {
		t.Fatalf("after the history was trimmed: %d held on %d messages", r.reactors, len(r.reacts))
	}
}
