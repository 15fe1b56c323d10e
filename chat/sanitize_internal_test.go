package chat

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestSanitize: what a room message from the bus may hold, and that what
// passes makes a valid message once the server's fields are put first.
func TestSanitize(t *testing.T) {
	h, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := newRoom("lobby", nil, historyLimits{})
	sid := "AAAAAAAAAAA"
	for _, tc := range []struct {
		msg string
		ok  bool
	}{
		// Edits, deletes, replies and sender ids.
		{`{"edits":3,"from":"alice","user":"7","text":"fixed","ts":1}`, true},
		{`{"from":"alice","user":"7","text":"fixed","ts":1,"edits":3}`, true}, // encoded again, its kind first
		{`{"deletes":3,"from":"alice","sid":"` + sid + `","text":"","ts":1}`, true},
		{`{"deletes":3,"from":"Ada","user":"7","mod":true,"text":"","ts":1}`, true},
		{`{"from":"alice","text":"yes","ts":1,"reply":{"seq":2,"from":"bob","excerpt":"hi"}}`, true},
		{`{"edits":0,"from":"alice","text":"hi","ts":1}`, false}, // would read as an edit
		{`{"deletes":3,"from":"alice","text":"gone","ts":1}`, false},
		{`{"edits":3,"deletes":4,"from":"alice","text":"x","ts":1}`, false},
		{`{"edits":-3,"from":"alice","text":"x","ts":1}`, false},
		{`{"edits":3,"from":"alice","text":"","ts":1}`, false},
		{`{"from":"alice","text":"hi","ts":1,"edited":5}`, false},
		{`{"from":"alice","text":"","ts":1,"deleted":5}`, false},
		{`{"from":"alice","text":"hi","ts":1,"mod":true}`, false},
		{`{"deletes":3,"from":"alice","mod":true,"text":"","ts":1}`, false}, // a guest is no moderator
		{`{"from":"alice","sid":"short","text":"hi","ts":1}`, false},
		{`{"from":"alice","user":"7","sid":"` + sid + `","text":"hi","ts":1}`, false},
		{`{"from":"alice","text":"hi","ts":1,"reply":{"seq":0,"from":"bob","excerpt":"hi"}}`, false},
		{`{"from":"alice","text":"hi","ts":1,"reply":{"seq":2,"from":"b b","excerpt":"hi"}}`, false},
		{`{"from":"alice","text":"hi","ts":1,"reply":{"seq":2,"from":"bob","excerpt":"\u0007"}}`, false},
		{`{"from":"alice","text":"hi","ts":1,"reply":{"seq":2,"from":"bob","excerpt":"hi","x":1}}`, false},
		{`{"edits":3,"from":"alice","text":"x","ts":1,"reply":{"seq":2,"from":"bob","excerpt":"hi"}}`, false},

		{`{"from":"alice","text":"hi","ts":1}`, true},
		{" \n{\"from\":\"alice\",\"text\":\"padded\",\"ts\":1}\t ", true},
		{`{"from":"system","system":true,"text":"hi","ts":1}`, true},
		{`{"from":"Ada","user":"42","text":"hi","ts":1,"id":"a.b:c-1"}`, true},
		{`{"from":"alice","text":"hi","ts":1,"type":"welcome"}`, false},
		{`{"from":"alice","text":"hi","ts":1,"room":"other"}`, false},
		{`{"from":"alice","text":"hi","ts":1,"seq":5}`, false},
		{`{"from":"alice","from":"bob","text":"hi","ts":1}`, false},
		{`{"from":"alice","text":"hi","ts":0}`, false},
		{`{"from":"alice","text":"hi","ts":1,"id":"has space"}`, false},
		{`{"from":"alice","text":"hi","ts":1,"user":"a\nb"}`, false},
		{`{"from":"system","text":"hi","ts":1}`, false},
		{`{"from":"alice","system":true,"text":"hi","ts":1}`, false},
		{`{"from":"ａｌｉｃｅ","text":"hi","ts":1}`, false}, // not as a node shows it
		{`{"from":"alice","text":"\u0007","ts":1}`, false},
		{`{"from":"alice","text":"hi","ts":1} {}`, false},
		{`{"from":"alice","text":"hi","ts":"1"}`, false},
		{"{\"from\":\"alice\",\"text\":\"\xff\",\"ts\":1}", false},
	} {
		var p published
		got, ok := h.sanitize("lobby", []byte(tc.msg), &p)
		if ok != tc.ok {
			t.Errorf("sanitize(%q) = %v, want %v", tc.msg, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		b, enc := r.encode([]byte("kept"), 7, got)
		var m map[string]any
		typ := "message"
		switch {
		case p.Edits != 0:
			typ = "edited"
		case p.Deletes != 0:
			typ = "deleted"
		}
		if !enc || string(b[:4]) != "kept" || json.Unmarshal(b[4:], &m) != nil || m["type"] != typ || m["seq"] != 7.0 || m["room"] != "lobby" {
			t.Errorf("sanitize(%q) then encode: %s", tc.msg, b)
		}
	}
	if st := h.Stats(); st.Dropped["message"] != 30 {
		t.Errorf("dropped %d, want 30", st.Dropped["message"])
	}
}

// TestEncodedLen: the history counts its bytes as members receive them,
// without encoding them (encodedLen); the two must agree.
func TestEncodedLen(t *testing.T) {
	r := newRoom("a \"room\" é", nil, historyLimits{})
	for _, msg := range []string{`{}`, `{ }`, "{\n}", `{"from":"alice","text":"hi","ts":1}`, `{ "a":1 }`, `{"edits":1,"text":"x"}`, `{"deletes":1}`} {
		for _, seq := range []int64{0, 1, 9, 10, 99, 100, 12345678901, -1, -10} {
			b, ok := r.encode(nil, seq, []byte(msg))
			if !ok {
				t.Fatalf("encode(%d, %q) refused", seq, msg)
			}
			if n := r.encodedLen(seq, []byte(msg)); n != len(b) {
				t.Errorf("encodedLen(%d, %q) = %d, encode gave %d bytes: %s", seq, msg, n, len(b), b)
			}
			if !json.Valid(b) {
				t.Errorf("encode(%d, %q) = %s: not JSON", seq, msg, b)
			}
		}
	}
}

// TestHistoryBytesCountEncoded: HistoryBytes bounds the history as members
// receive it (and a join replays it), though it stores messages as
// published: a limit of exactly three encoded messages keeps three.
func TestHistoryBytesCountEncoded(t *testing.T) {
	msg := []byte(`{"from":"alice","text":"hi","ts":1}`)
	probe := newRoom("lobby", nil, historyLimits{})
	limit := 0
	for seq := int64(8); seq <= 10; seq++ {
		b, _ := probe.encode(nil, seq, msg)
		limit += len(b)
	}
	r := newRoom("lobby", nil, historyLimits{count: 100, bytes: limit})
	for seq := int64(1); seq <= 10; seq++ {
		r.appendHistory(seq, bytes.Clone(msg), 0)
	}
	out, _ := r.history(-1, 0, 100)
	if len(out) != 3 || r.histBytes != limit {
		t.Fatalf("kept %d messages in %d bytes, want 3 in %d", len(out), r.histBytes, limit)
	}
	for i, m := range out {
		want, _ := probe.encode(nil, int64(8+i), msg)
		if !bytes.Equal(m, want) {
			t.Errorf("replayed %s, want %s", m, want)
		}
	}
}
