package engine_test

import (
	"os"
	"testing"

	"github.com/lesismal/nbio/logging"
)

func TestMain(m *testing.M) {
	// nbio logs through a package-level logger of its own; keep test output
	// readable unless asked.
	if os.Getenv("PARLEY_TEST_LOG") == "" {
		logging.SetLevel(logging.LevelNone)
	}
	os.Exit(m.Run())
}
