package chat

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// The hub's rate limits: requests per client, rooms made per client, and
// log lines per second.

// allow applies the client's token bucket to req (nil: a request that
// could not be read); a client that keeps pushing past RateHardLimit
// refusals is closed with 1008. The refusal names req, as errors do.
func (h *Hub) allow(c *client, req *protocol.Request) bool {
	rate := h.cfg.RateLimit
	if rate < 0 {
		return true
	}
	now := time.Now().UnixNano()
	elapsed := float64(now-c.last) / 1e9
	c.last = now
	c.tokens = float32(min(float64(h.cfg.RateBurst), float64(c.tokens)+elapsed*rate))
	c.strikes = float32(max(0, float64(c.strikes)-elapsed*rate))
	if c.tokens >= 1 {
		c.tokens--
		return true
	}
	c.strikes++
	h.stats.rateLimited.Add(1)
	if float64(c.strikes) > float64(h.cfg.RateHardLimit) {
		_ = h.ep.Close(c.id, engine.StatusCode(protocol.ClosePolicyViolation), protocol.ReasonRateLimit)
		return false
	}
	h.fail(c, req, protocol.CodeRateLimited, fmt.Sprintf("slow down: at most %g requests per second", rate))
	return false
}

// rateLog lets a log line through at most once a second.
type rateLog struct{ last atomic.Int64 }

func (l *rateLog) allow(now time.Time) bool {
	last := l.last.Load()
	return now.UnixNano()-last >= int64(time.Second) && l.last.CompareAndSwap(last, now.UnixNano())
}
