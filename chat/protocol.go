package chat

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/parleyhq/parley/internal/strictjson"
)

// decodeStrict decodes the JSON object data into v strictly
// (strictjson.Decode): a request never gets a second meaning.
func decodeStrict(data []byte, v any) error { return strictjson.Decode(data, v) }

// joinedLarge is Joined with the member sample already encoded.
type joinedLarge struct {
	Type      string          `json:"type"`
	Room      string          `json:"room"`
	Nick      string          `json:"nick"`
	Count     int             `json:"count"`
	Members   json.RawMessage `json:"members"`
	Truncated bool            `json:"truncated"`
	Seq       int64           `json:"seq"`
	Epoch     int64           `json:"epoch"`
}

// badTextRune reports the characters a message's text may not hold:
// control characters other than tab and newline, and the bidi
// embeddings, overrides and isolates that reorder what follows them
// (U+202A-U+202E, U+2066-U+2069: "Trojan Source", a right-to-left
// override showing "txt.exe" as "exe.txt"). The marks (LRM, RLM, ALM)
// stay: they reorder nothing, and mixed text needs them.
func badTextRune(r rune) bool {
	switch {
	case r == '\t' || r == '\n':
		return false
	case r < 0x20 || (r >= 0x7f && r <= 0x9f):
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// MaxNickLength and MaxRoomLength cap names, in characters.
const (
	MaxNickLength = 24
	MaxRoomLength = 32
)

// validNick checks a nickname: 1 to 24 letters, digits, '_', '-' or '.',
// starting with a letter or digit.
func validNick(s string) error {
	return validName(s, MaxNickLength, "_-.")
}

// validRoom checks a room name: 1 to 32 letters, digits, '_' or '-',
// starting with a letter or digit.
func validRoom(s string) error {
	return validName(s, MaxRoomLength, "_-")
}

func validName(s string, maxLen int, punct string) error {
	n := utf8.RuneCountInString(s)
	switch {
	case n == 0:
		return fmt.Errorf("must not be empty")
	case n > maxLen:
		return fmt.Errorf("must be at most %d characters", maxLen)
	}
	for i, r := range s {
		ok := unicode.IsLetter(r) || unicode.IsDigit(r) || (i > 0 && strings.ContainsRune(punct, r))
		if !ok {
			return fmt.Errorf("may hold letters, digits and %q only, starting with a letter or digit", punct)
		}
	}
	return nil
}

// validRoomPrefix checks the part before '*' of a room pattern: what a
// room name may start with.
func validRoomPrefix(s string) bool {
	return s != "" && validRoom(s) == nil || s != "" && validRoom(s+"x") == nil
}
