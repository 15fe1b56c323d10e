package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEExamples: every Go example in README.md is compiled code: its
// lines (indentation and comment lines aside) stand in that order in an Example of a test
// file, a README's `func main() {` being the Example's opening line. So
// an example that stops compiling fails its package's build, and one
// edited in the README alone fails here.
func TestREADMEExamples(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no Go example")
	}
	var files [][]string
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && strings.Contains(string(b), "func Example") {
			files = append(files, lines(string(b)))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		want := lines(string(b[1]))
		if !found(want, files) {
			t.Errorf("README.md's example starting %q is in no Example of a test file", want[0])
		}
	}
}

// lines returns s's lines, trimmed, but blank and comment lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "//") {
			out = append(out, l)
		}
	}
	return out
}

// found reports whether want stands, in order and contiguous, in one of
// files.
func found(want []string, files [][]string) bool {
	same := func(w, l string) bool {
		return w == l || w == "func main() {" && strings.HasPrefix(l, "func Example") && strings.HasSuffix(l, "() {")
	}
	for _, f := range files {
	next:
		for i := 0; i+len(want) <= len(f); i++ {
			for j, w := range want {
				if !same(w, f[i+j]) {
					continue next
				}
			}
			return true
		}
	}
	return false
}
