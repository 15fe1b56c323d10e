package engine_test

import (
	"testing"

	"github.com/parleyhq/parley/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }
