package chat

import (
	"fmt"
	"strings"

	"github.com/mtibben/confusables"
	"golang.org/x/text/secure/precis"
)

// Nicks are people's names in a room, so two that look alike must not
// both exist. A nick is accepted in the form PRECIS's UsernameCasePreserved
// profile (RFC 8265) gives it: full-width letters become ASCII, the text
// is NFC, and characters that do not belong in identifiers are refused
// (controls, bidi overrides, spaces, symbols, invisible and compatibility
// characters such as the Hangul filler). It is then held to Parley's own
// rule (letters, digits and "_-.", starting with a letter or digit). Two
// nicks are the same nick when their keys are equal: the case-mapped
// PRECIS form reduced to its confusable skeleton (Unicode TR 39), so
// "alice", "Alice", "ａｌｉｃｅ" and "аlice" (a Cyrillic a) are one nick,
// and "guеst-1" is a guest nick.

// normalizeNick returns s as a nick is shown, or an error saying why it
// cannot be one.
func normalizeNick(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("must not be empty")
	}
	shown, err := precis.UsernameCasePreserved.String(s)
	if err != nil {
		return "", fmt.Errorf("may hold letters and digits only: no spaces, symbols, invisible, control or direction characters (%v)", err)
	}
	if err := validNick(shown); err != nil {
		return "", err
	}
	return shown, nil
}

// nickKey returns the key two nicks that look alike share: the case-mapped
// PRECIS form of nick, reduced to its TR 39 skeleton. It fails for what
// normalizeNick refuses.
func nickKey(nick string) (string, error) {
	if _, err := normalizeNick(nick); err != nil {
		return "", err
	}
	mapped, err := precis.UsernameCaseMapped.String(nick)
	if err != nil {
		return "", err
	}
	// The skeleton may map to capitals (a Cyrillic "ѕ" to "s", but "l"
	// and "I" to "l"): lower-case it again so case never matters.
	return strings.ToLower(confusables.Skeleton(mapped)), nil
}

// keyOf is nickKey for a nick already accepted (a client's own).
func keyOf(nick string) string {
	k, _ := nickKey(nick)
	return k
}
