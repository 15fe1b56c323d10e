// Package notify posts the chat's unread notifications to a backend: each
// one a JSON body, signed with HMAC-SHA256 so the backend can tell it came
// from this server, queued within a bound and sent again with backoff
// while the backend fails. A backend turns them into push notifications,
// emails, or nothing.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/chat"
	"github.com/parleyhq/parley/internal/cfgerr"
)

// Defaults applied to zero Config fields.
const (
	DefaultTimeout  = 5 * time.Second
	DefaultRetries  = 5
	DefaultMaxQueue = 10000
	DefaultWorkers  = 4
	// minBackoff and maxBackoff bound the wait before a post is tried
	// again: doubled after each failure.
	minBackoff = time.Second
	maxBackoff = time.Minute
)

// MinSecretLength is the shortest HMAC secret Config takes.
const MinSecretLength = 16

// Config configures a Poster.
type Config struct {
	// URL is where notifications are posted (http or https). Required.
	URL string
	// Secret keys the signature (at least 16 bytes). Required.
	Secret []byte
	// Timeout bounds one post. Default 5 s.
	Timeout time.Duration
	// Retries is how many times a failed post is tried again (after 1 s,
	// 2 s, 4 s, ... at most a minute apart); then it is dropped. Default
	// 5; -1: never again.
	Retries int
	// MaxQueue bounds the notifications waiting to be posted (and to be
	// posted again); past it a new one is dropped. Default 10,000.
	MaxQueue int
	// Workers is how many posts are made at once. Default 4.
	Workers int
	// Client makes the posts. Default: an http.Client with Timeout.
	Client *http.Client
	// Logger receives the poster's logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.Timeout == 0 {
		d.Timeout = DefaultTimeout
	}
	if d.Retries == 0 {
		d.Retries = DefaultRetries
	}
	if d.MaxQueue == 0 {
		d.MaxQueue = DefaultMaxQueue
	}
	if d.Workers == 0 {
		d.Workers = DefaultWorkers
	}
	if d.Client == nil {
		d.Client = &http.Client{Timeout: d.Timeout}
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return d
}

// Validate reports the first invalid field, after defaults are applied.
func (c *Config) Validate() error {
	d := c.withDefaults()
	u, err := url.Parse(d.URL)
	switch {
	case d.URL == "":
		return cfgerr.New("URL", "notify: URL is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return cfgerr.New("URL", "notify: URL %q: want an http or https URL", d.URL)
	case len(d.Secret) < MinSecretLength:
		return cfgerr.New("Secret", "notify: Secret: %d bytes, want at least %d", len(d.Secret), MinSecretLength)
	case d.Timeout < 0:
		return cfgerr.New("Timeout", "notify: Timeout (%v) must be positive", d.Timeout)
	case d.Retries < -1:
		return cfgerr.New("Retries", "notify: Retries (%d) must be 0 or more, or -1", d.Retries)
	case d.MaxQueue < 1:
		return cfgerr.New("MaxQueue", "notify: MaxQueue (%d) must be positive", d.MaxQueue)
	case d.Workers < 1:
		return cfgerr.New("Workers", "notify: Workers (%d) must be positive", d.Workers)
	}
	return nil
}

// SignatureHeader carries a post's signature: "t=<unix seconds>,v1=<hex>",
// the HMAC-SHA256 with the secret of "<t>.<body>". A receiver recomputes
// it, compares in constant time, and refuses a t far from its clock
// (replays): Verify does.
const SignatureHeader = "X-Parley-Signature"

// Sign returns the SignatureHeader value of body at t.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// ErrBadSignature is Verify's error for a body that is not the server's.
var ErrBadSignature = errors.New("notify: bad signature")

// Verify checks a post's signature header against its body: signed with
// secret, at most skew from now.
func Verify(secret, body []byte, header string, now time.Time, skew time.Duration) error {
	var ts int64
	var sig string
	for _, part := range bytes.Split([]byte(header), []byte(",")) {
		k, v, _ := bytes.Cut(part, []byte("="))
		switch string(k) {
		case "t":
			ts, _ = strconv.ParseInt(string(v), 10, 64)
		case "v1":
			sig = string(v)
		}
	}
	t := time.Unix(ts, 0)
	if ts <= 0 || sig == "" || t.Before(now.Add(-skew)) || t.After(now.Add(skew)) {
		return fmt.Errorf("%w: %q", ErrBadSignature, header)
	}
	want := Sign(secret, body, t)
	if !hmac.Equal([]byte(want), []byte("t="+strconv.FormatInt(ts, 10)+",v1="+sig)) {
		return ErrBadSignature
	}
	return nil
}

// Stats are a Poster's counters.
type Stats struct {
	Sent    uint64 // notifications the backend took (2xx)
	Retried uint64 // posts tried again after a failure
	Failed  uint64 // notifications given up after Retries failures (or refused with a 4xx)
	Dropped uint64 // notifications dropped because MaxQueue waited
	Queued  int    // notifications waiting now
}

// Poster posts notifications. It implements chat.Notifier. Create it with
// New; Close stops it.
type Poster struct {
	cfg    Config
	queue  chan job
	stop   chan struct{}
	ctx    context.Context // canceled by Close: posts under way end
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	sent, retried, failed, dropped atomic.Uint64
	waiting                        atomic.Int64 // queued, or waiting to be tried again
}

type job struct {
	body  []byte
	tries int
}

// New returns a running Poster for cfg, or an error naming the first
// invalid field.
func New(cfg Config) (*Poster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	p := &Poster{cfg: c, queue: make(chan job, c.MaxQueue), stop: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(c.Workers)
	for range c.Workers {
		go p.work()
	}
	return p, nil
}

var _ chat.Notifier = (*Poster)(nil)

// Notify implements chat.Notifier: n is queued for posting, or dropped if
// MaxQueue notifications wait already. It never blocks.
func (p *Poster) Notify(n chat.Notification) {
	body, err := json.Marshal(n)
	if err != nil {
		p.dropped.Add(1)
		return
	}
	p.enqueue(job{body: body})
}

func (p *Poster) enqueue(j job) {
	if p.waiting.Add(1) > int64(p.cfg.MaxQueue) {
		p.waiting.Add(-1)
		p.dropped.Add(1)
		return
	}
	select {
	case p.queue <- j:
	case <-p.stop:
		p.waiting.Add(-1)
	}
}

func (p *Poster) work() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case j := <-p.queue:
			p.post(j)
		}
	}
}

// post sends j's body; a failure is tried again after its backoff, on a
// timer (the worker goes on with the next), until Retries.
func (p *Poster) post(j job) {
	err := p.send(j.body)
	if err == nil {
		p.waiting.Add(-1)
		p.sent.Add(1)
		return
	}
	var perm *permanentError
	if p.ctx.Err() != nil {
		p.waiting.Add(-1)
		return // closed
	}
	if errors.As(err, &perm) || p.cfg.Retries < 0 || j.tries >= p.cfg.Retries {
		p.waiting.Add(-1)
		p.failed.Add(1)
		p.cfg.Logger.Warn("an unread notification was not taken; dropped", "url", p.cfg.URL, "tries", j.tries+1, "err", err)
		return
	}
	wait := min(maxBackoff, minBackoff<<j.tries)
	j.tries++
	p.retried.Add(1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-p.stop:
			p.waiting.Add(-1)
		case <-t.C:
			select {
			case p.queue <- j:
			case <-p.stop:
				p.waiting.Add(-1)
			}
		}
	}()
}

// permanentError is a refusal sending again cannot change (a 4xx but 408
// and 429).
type permanentError struct{ status int }

func (e *permanentError) Error() string {
	return "the backend refused it: " + http.StatusText(e.status)
}

func (p *Poster) send(body []byte) error {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, Sign(p.cfg.Secret, body, time.Now()))
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		return nil
	case s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooManyRequests:
		return &permanentError{s}
	default:
		return fmt.Errorf("the backend answered %d", s)
	}
}

// Stats returns the poster's counters.
func (p *Poster) Stats() Stats {
	return Stats{Sent: p.sent.Load(), Retried: p.retried.Load(), Failed: p.failed.Load(), Dropped: p.dropped.Load(),
		Queued: int(max(0, p.waiting.Load()))}
}

// Close stops posting: posts under way are canceled, what waits is
// dropped.
func (p *Poster) Close() error {
	p.once.Do(func() {
		close(p.stop)
		p.cancel()
	})
	p.wg.Wait()
	return nil
}
