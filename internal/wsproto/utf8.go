package wsproto

import "unicode/utf8"

// UTF8 validates text as it arrives, in pieces: a text message must be
// refused (1007) as soon as its bytes cannot be UTF-8, not once it is
// complete (RFC 6455 8.1; Autobahn 6.4.x). The zero value is ready for a
// new message.
type UTF8 struct {
	need   uint8 // continuation bytes the current character still needs
	lo, hi uint8 // the range the next continuation byte must be in
}

// Feed validates the next bytes of the text. It reports false once the
// bytes so far are not the start of valid UTF-8 (an invalid byte, an
// overlong form, a surrogate, a code point past U+10FFFF).
func (u *UTF8) Feed(p []byte) bool {
	if u.need == 0 && utf8.Valid(p) {
		return true // the common case, checked a word at a time
	}
	for _, b := range p {
		if u.need == 0 {
			switch {
			case b < 0x80:
			case b >= 0xc2 && b <= 0xdf:
				u.need, u.lo, u.hi = 1, 0x80, 0xbf
			case b == 0xe0:
				u.need, u.lo, u.hi = 2, 0xa0, 0xbf // no overlong forms
			case b >= 0xe1 && b <= 0xec, b == 0xee, b == 0xef:
				u.need, u.lo, u.hi = 2, 0x80, 0xbf
			case b == 0xed:
				u.need, u.lo, u.hi = 2, 0x80, 0x9f // no surrogates
			case b == 0xf0:
				u.need, u.lo, u.hi = 3, 0x90, 0xbf
			case b >= 0xf1 && b <= 0xf3:
				u.need, u.lo, u.hi = 3, 0x80, 0xbf
			case b == 0xf4:
				u.need, u.lo, u.hi = 3, 0x80, 0x8f // nothing past U+10FFFF
			default:
				return false
			}
			continue
		}
		if b < u.lo || b > u.hi {
			return false
		}
		u.need--
		u.lo, u.hi = 0x80, 0xbf
	}
	return true
}

// Complete reports whether the text fed so far ends on a whole character.
func (u *UTF8) Complete() bool { return u.need == 0 }
