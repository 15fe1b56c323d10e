package cfgerr_test

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/parleyhq/parley/internal/cfgerr"
)

func TestError(t *testing.T) {
	var err error = cfgerr.New("Root", "web: Root %q: %w", "/x", fs.ErrNotExist)
	var ce *cfgerr.Error
	if !errors.As(err, &ce) || ce.Field != "Root" {
		t.Fatalf("As: %v", err)
	}
	if !errors.Is(err, cfgerr.ErrInvalid) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Is: %v", err)
	}
	if err.Error() != `web: Root "/x": file does not exist` {
		t.Fatalf("message %q", err)
	}
	if errors.Is(errors.New("other"), cfgerr.ErrInvalid) {
		t.Fatal("another error is ErrInvalid")
	}
}
