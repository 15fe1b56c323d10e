package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// WriteHTML writes a self-contained HTML report: the summary and charts of
// connections, throughput and latency over time, drawn as inline SVG, so
// it opens offline with nothing to fetch.
func (r *Result) WriteHTML(w io.Writer) error {
	var summary strings.Builder
	r.WriteText(&summary)
	data := struct {
		R        *Result
		Summary  string
		Charts   []template.HTML
		Passed   bool
		Subtitle string
	}{R: r, Summary: summary.String(), Passed: r.Passed,
		Subtitle: fmt.Sprintf("%s, %d clients, %d worker(s)", r.Scenario, r.Clients, max(1, r.Workers))}
	ts := make([]float64, len(r.Series))
	open := make([]float64, len(r.Series))
	recv := make([]float64, len(r.Series))
	p50 := make([]float64, len(r.Series))
	p99 := make([]float64, len(r.Series))
	for i, s := range r.Series {
		ts[i], open[i], recv[i], p50[i], p99[i] = s.T, float64(s.Open), float64(s.Received), s.P50, s.P99
	}
	data.Charts = []template.HTML{
		chart("Connections open", "connections", ts, []series{{"open", "#0969da", open}}),
		chart("Messages received per second", "messages/s", ts, []series{{"received", "#1a7f37", recv}}),
		chart("End-to-end latency of each second's deliveries", "ms", ts, []series{{"p50", "#0969da", p50}, {"p99", "#cf222e", p99}}),
	}
	return reportTemplate.Execute(w, data)
}

type series struct {
	name, color string
	ys          []float64
}

// chart draws a line chart as SVG.
func chart(title, unit string, xs []float64, ss []series) template.HTML {
	const W, H, L, R, T, B = 760.0, 240.0, 64.0, 16.0, 28.0, 36.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`, W, H, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<text x="%.0f" y="18" class="title">%s</text>`, L, template.HTMLEscapeString(title))
	xmax, ymax := 1.0, 0.0
	for _, x := range xs {
		xmax = math.Max(xmax, x)
	}
	for _, s := range ss {
		for _, y := range s.ys {
			ymax = math.Max(ymax, y)
		}
	}
	ymax = niceCeil(ymax)
	px := func(x float64) float64 { return L + (W-L-R)*x/xmax }
	py := func(y float64) float64 { return H - B - (H-T-B)*y/ymax }
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="grid"/>`, L, W-R, py(y), py(y))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="axis" text-anchor="end">%s</text>`, L-6, py(y)+4, short(y))
	}
	for i := 0; i <= 5; i++ {
		x := xmax * float64(i) / 5
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="axis" text-anchor="middle">%.0fs</text>`, px(x), H-B+16, x)
	}
	fmt.Fprintf(&b, `<text x="12" y="%.1f" class="axis" transform="rotate(-90 12 %.1f)" text-anchor="middle">%s</text>`,
		(H-B+T)/2, (H-B+T)/2, template.HTMLEscapeString(unit))
	for k, s := range ss {
		var pts []string
		for i, y := range s.ys {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(xs[i]), py(y)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, s.color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%.1f" y="18" fill="%s" class="legend">● %s</text>`, W-R-80*float64(len(ss)-k), s.color,
			template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func short(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.3g", v)
}

var reportTemplate = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Parley load test: {{.Subtitle}}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 820px; color: #1f2328; }
h1 { font-size: 20px; margin-bottom: 2px; } .sub { color: #57606a; margin-top: 0; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 10px; color: #fff; background: {{if .Passed}}#1a7f37{{else}}#cf222e{{end}}; }
pre { background: #f6f8fa; padding: 12px; border-radius: 6px; overflow-x: auto; }
svg { width: 100%; height: auto; margin: 12px 0; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; }
svg .grid { stroke: #eaeef2; } svg .axis { font-size: 11px; fill: #57606a; }
svg .title { font-size: 13px; font-weight: 600; fill: #1f2328; } svg .legend { font-size: 12px; }
</style></head><body>
<h1>Parley load test</h1>
<p class="sub">{{.Subtitle}} <span class="verdict">{{.R.Verdict}}</span></p>
{{range .Charts}}{{.}}{{end}}
<h2>Summary</h2>
<pre>{{.Summary}}</pre>
</body></html>
`))
