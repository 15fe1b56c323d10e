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
