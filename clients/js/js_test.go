package parleyjs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestNode runs the library's tests (test/*.test.mjs) under Node with the
// ws package, against real parley serve processes built here. CI installs
// ws (npm ci --prefix clients/js) and has Node; elsewhere the test is
// skipped without them, and fails without them when CI is set.
func TestNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if _, serr := os.Stat("node_modules/ws"); err != nil || serr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node (%v) or node_modules/ws (%v) missing: npm ci --prefix clients/js", err, serr)
		}
		t.Skip("node or node_modules/ws missing: npm ci --prefix clients/js")
	}
	bin := filepath.Join(t.TempDir(), "parley")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/parley")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building parley: %v\n%s", err, out)
	}
	cmd := exec.Command(node, "--test", "--test-reporter=spec", "test/")
	cmd.Env = append(os.Environ(), "PARLEY_BIN="+bin)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("node --test: %v", err)
	}
}
