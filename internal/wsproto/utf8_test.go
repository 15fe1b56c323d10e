package wsproto

import (
	"testing"
	"unicode/utf8"
)

// TestUTF8AgainstTheStandardLibrary: fed whole or a byte at a time, UTF8
// agrees with utf8.Valid on every string of up to three bytes from a set
// that covers each lead and continuation class, and on longer samples.
func TestUTF8AgainstTheStandardLibrary(t *testing.T) {
	bytes := []byte{0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1,
		0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xf8, 0xff}
	check := func(s []byte) {
		var whole, each UTF8
		okWhole := whole.Feed(s) && whole.Complete()
		okEach := true
		for i := range s {
			okEach = okEach && each.Feed(s[i:i+1])
		}
		okEach = okEach && each.Complete()
		if want := utf8.Valid(s); okWhole != want || okEach != want {
			t.Fatalf("% x: whole %v, byte by byte %v, utf8.Valid %v", s, okWhole, okEach, want)
		}
	}
	for _, a := range bytes {
		check([]byte{a})
		for _, b := range bytes {
			check([]byte{a, b})
			for _, c := range bytes {
				check([]byte{a, b, c})
				for _, d := range []byte{0x80, 0xbf, 0x41} {
					check([]byte{a, b, c, d})
				}
			}
		}
	}
	for _, s := range []string{"κόσμε", "\xf0\x9f\x98\x80 ok", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xef\xbf\xbf"} {
		check([]byte(s))
	}
	// A bad byte is refused as it arrives, before the text ends.
	var u UTF8
	if !u.Feed([]byte("\xce\xba\xe1")) || u.Feed([]byte{0x28}) {
		t.Fatal("E1 28 accepted")
	}
}
