package strictjson

import (
	"strings"
	"testing"
)

type inner struct {
	User string `json:"user"`
}

type body struct {
	Text  string `json:"text"`
	N     int64  `json:"n"`
	From  *inner `json:"from"`
	Flags []bool `json:"flags"`
}

// TestDecode: each bad input gets an error naming the field in JSON's
// terms, never a Go type of the server's.
func TestDecode(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"text":"hi","n":1,"from":{"user":"u"},"flags":[true]}`, ""},
		{`{"text":"hi","room":"x"}`, `unknown field "room"`},
		{`{"Text":"hi"}`, `unknown field "Text"`},
		{`{"text":"hi","text":"ho"}`, `(field "text"): duplicate`},
		{`{"text":5}`, `field "text": want a string, got a number`},
		{`{"n":"5"}`, `field "n": want an integer, got a string`},
		{`{"n":1.5}`, `field "n": a number does not fit an integer`},
		{`{"from":5}`, `field "from": want an object, got a number`},
		{`{"from":{"user":1}}`, `field "from/user": want a string, got a number`},
		{`{"flags":{}}`, `field "flags": want an array, got an object`},
		{`[1]`, `want a JSON object, got an array`},
		{`{"text":"hi"} x`, `malformed JSON`},
		{"{\"text\":\"\xff\"}", `malformed JSON`},
	} {
		var b body
		err := Decode([]byte(tc.in), &b)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.in, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.in, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "strictjson."):
			t.Errorf("%s: %v names a Go type", tc.in, err)
		}
	}
}
