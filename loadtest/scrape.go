package loadtest

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// serverFigures are what the servers' /metrics say of their processes.
type serverFigures struct {
	rss, cpu float64 // bytes; CPU seconds
	ok       bool    // every URL answered
}

// scrapeServers reads process_resident_memory_bytes and
// process_cpu_seconds_total from each URL and sums them.
func scrapeServers(urls []string) serverFigures {
	if len(urls) == 0 {
		return serverFigures{}
	}
	c := &http.Client{Timeout: 5 * time.Second}
	out := serverFigures{ok: true}
	for _, u := range urls {
		resp, err := c.Get(u)
		if err != nil {
			out.ok = false
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			for _, m := range []struct {
				name string
				dst  *float64
			}{{"process_resident_memory_bytes ", &out.rss}, {"process_cpu_seconds_total ", &out.cpu}} {
				if v, ok := strings.CutPrefix(line, m.name); ok {
					if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
						*m.dst += f
					}
				}
			}
		}
		resp.Body.Close()
	}
	return out
}

// measureServers fills r's server figures: RSS from the server PIDs (or,
// without them, from the metrics), CPU used since before.
func (r *Result) measureServers(cfg Config, before serverFigures) {
	for _, pid := range cfg.ServerPIDs {
		r.ServerRSSBytes += rssOf(strconv.Itoa(pid))
	}
	after := scrapeServers(cfg.MetricsURLs)
	if len(cfg.ServerPIDs) == 0 && after.ok {
		r.ServerRSSBytes = int64(after.rss)
	}
	if before.ok && after.ok {
		r.ServerCPUSeconds = after.cpu - before.cpu
	}
}
