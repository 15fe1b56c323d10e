package notify_test

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/internal/poll"
	"github.com/parleyhq/parley/notify"
)

var secret = []byte("a-secret-of-more-than-16-bytes")

// receiver is a backend: it checks each post's signature and answers
// with the statuses given, in turn (then 200).
func receiver(t *testing.T, statuses ...int) (*httptest.Server, chan []byte) {
	t.Helper()
	got := make(chan []byte, 100)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.Verify(secret, body, r.Header.Get(notify.SignatureHeader), time.Now(), time.Minute); err != nil {
			t.Errorf("a post that does not verify: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if i := int(n.Add(1)) - 1; i < len(statuses) {
			w.WriteHeader(statuses[i])
			return
		}
		got <- body
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func poster(t *testing.T, cfg notify.Config) *notify.Poster {
	t.Helper()
	cfg.Secret, cfg.Logger = secret, slog.New(slog.DiscardHandler)
	p, err := notify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestPoster: a notification is posted signed; a backend that fails with
// a 5xx gets it again; one that refuses it with a 4xx does not.
func TestPoster(t *testing.T) {
	srv, got := receiver(t, http.StatusServiceUnavailable, http.StatusBadRequest)
	p := poster(t, notify.Config{URL: srv.URL})
	p.Notify(chat.Notification{ID: "a", Kind: "dm", User: "u1", From: "bob", Text: "hi", TS: 1})
	p.Notify(chat.Notification{ID: "b", Kind: "dm", User: "u1", From: "bob", Text: "ho", TS: 2})
	select {
	case b := <-got:
		if string(b) != `{"id":"a","kind":"dm","user":"u1","from":"bob","text":"hi","ts":1}` && string(b) != `{"id":"b","kind":"dm","user":"u1","from":"bob","text":"ho","ts":2}` {
			t.Fatalf("posted %s", b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("nothing posted")
	}
	poll.Until(t, "one sent, one refused, one retry", func() bool {
		st := p.Stats()
		return st.Sent == 1 && st.Failed == 1 && st.Retried == 1 && st.Queued == 0
	})
}

// TestQueueBound: past MaxQueue waiting notifications, new ones are
// dropped, and counted.
func TestQueueBound(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	p := poster(t, notify.Config{URL: srv.URL, MaxQueue: 3, Workers: 1, Timeout: time.Minute})
	for i := range 10 {
		p.Notify(chat.Notification{ID: string(rune('a' + i)), Kind: "dm", User: "u1"})
	}
	if st := p.Stats(); st.Dropped != 7 || st.Queued != 3 {
		t.Fatalf("%+v: want 7 dropped, 3 queued", st)
	}
}

// TestVerify: a changed body, another secret, an old or missing time are
// refused.
func TestVerify(t *testing.T) {
	now := time.Now()
	body := []byte(`{"id":"x"}`)
	sig := notify.Sign(secret, body, now)
	if err := notify.Verify(secret, body, sig, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		secret, body []byte
		sig          string
		at           time.Time
	}{
		"changed body":   {secret, []byte(`{"id":"y"}`), sig, now},
		"another secret": {[]byte("another-secret-of-16-bytes"), body, sig, now},
		"too old":        {secret, body, notify.Sign(secret, body, now.Add(-time.Hour)), now},
		"no time":        {secret, body, "v1=00", now},
		"empty":          {secret, body, "", now},
	} {
		if err := notify.Verify(tc.secret, tc.body, tc.sig, tc.at, time.Minute); !errors.Is(err, notify.ErrBadSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestConfig: a bad URL or a short secret is refused, naming the field.
func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg   notify.Config
		field string
	}{
		{notify.Config{Secret: secret}, "URL"},
		{notify.Config{URL: "ftp://x", Secret: secret}, "URL"},
		{notify.Config{URL: "http://x", Secret: []byte("short")}, "Secret"},
		{notify.Config{URL: "http://x", Secret: secret, Retries: -2}, "Retries"},
	} {
		_, err := notify.New(tc.cfg)
		var ce *chat.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%+v: %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
}
