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
		R         *Result
		Summary   string
		Charts    []template.HTML
		Passed    bool
		Subtitle  string
		Headlines []headline
		Command   string
	}{R: r, Summary: summary.String(), Passed: r.Passed,
		Subtitle:  fmt.Sprintf("%s, %d clients, %d worker(s)", r.Scenario, r.Clients, max(1, r.Workers)),
		Headlines: r.headlines(), Command: strings.Join(r.Command, " ")}
	ts := make([]float64, len(r.Series))
	open := make([]float64, len(r.Series))
	recv := make([]float64, len(r.Series))
	p50 := make([]float64, len(r.Series))
	p99 := make([]float64, len(r.Series))
	for i, s := range r.Series {
		ts[i], open[i], recv[i], p50[i], p99[i] = s.T, float64(s.Open), float64(s.Received), s.P50, s.P99
	}
	rt := make([]float64, len(r.Ramp))
	ropen := make([]float64, len(r.Ramp))
	for i, p := range r.Ramp {
		rt[i], ropen[i] = p.T, float64(p.Open)
	}
	if len(r.Ramp) > 1 {
		data.Charts = append(data.Charts, chart("Connection ramp (every 100 ms)", "connections", rt, []series{{"open", "#0969da", ropen}}))
	}
	data.Charts = append(data.Charts,
		chart("Connections open", "connections", ts, []series{{"open", "#0969da", open}}),
		chart("Messages received per second", "messages/s", ts, []series{{"received", "#1a7f37", recv}}),
		chart("End-to-end latency of each second's deliveries", "ms", ts, []series{{"p50", "#0969da", p50}, {"p99", "#cf222e", p99}}),
	)
	if l := r.EndToEnd; l.Count > 0 {
		data.Charts = append(data.Charts, bars("End-to-end latency distribution (whole run)", "ms",
			[]string{"p50", "p90", "p99", "p99.9", "max"}, []float64{l.P50, l.P90, l.P99, l.P999, l.Max}))
	}
	rss := make([]float64, len(r.Series))
	cpu := make([]float64, len(r.Series))
	seen := false
	for i, s := range r.Series {
		rss[i], cpu[i] = float64(s.ServerRSS)/1e6, s.ServerCPU*100
		seen = seen || s.ServerRSS > 0
	}
	if seen {
		data.Charts = append(data.Charts,
			chart("Server resident memory (--server-pid)", "MB", ts, []series{{"RSS", "#8250df", rss}}),
			chart("Server CPU (--server-pid; 100% = one core)", "% of a core", ts, []series{{"CPU", "#bc4c00", cpu}}))
	}
	return reportTemplate.Execute(w, data)
}

// headline is one of the figures at the top of the report.
type headline struct{ Name, Value string }

func (r *Result) headlines() []headline {
	h := []headline{{"connected", fmt.Sprintf("%d of %d (%.0f/s)", r.Connected, r.Clients, r.ConnectRate)}}
	if r.Expected > 0 {
		h = append(h, headline{"delivered", fmt.Sprintf("%d of %d", r.Delivered, r.Expected)},
			headline{"missing", fmt.Sprint(r.Missing)}, headline{"deliveries/s", short(r.DeliveriesPerSec)})
	}
	if r.EndToEnd.Count > 0 {
		h = append(h, headline{"latency p50 / p99", fmt.Sprintf("%.1f / %.1f ms", r.EndToEnd.P50, r.EndToEnd.P99)})
	}
	if r.ServerRSSPerConn > 0 {
		h = append(h, headline{"server memory", fmt.Sprintf("%.0f B per connection", r.ServerRSSPerConn)})
	}
	if r.WireBytesPerMsg > 0 {
		h = append(h, headline{"wire", fmt.Sprintf("%.0f B per message", r.WireBytesPerMsg)})
	}
	return h
}

// bars draws a bar chart as SVG.
func bars(title, unit string, names []string, ys []float64) template.HTML {
	const W, H, L, R, T, B = 760.0, 240.0, 64.0, 16.0, 28.0, 36.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`, W, H, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<text x="%.0f" y="18" class="title">%s</text>`, L, template.HTMLEscapeString(title))
	ymax := 0.0
	for _, y := range ys {
		ymax = math.Max(ymax, y)
	}
	ymax = niceCeil(ymax)
	py := func(y float64) float64 { return H - B - (H-T-B)*y/ymax }
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="grid"/>`, L, W-R, py(y), py(y))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="axis" text-anchor="end">%s</text>`, L-6, py(y)+4, short(y))
	}
	slot := (W - L - R) / float64(len(ys))
	for i, y := range ys {
		x := L + slot*float64(i) + slot*0.2
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#0969da"/>`, x, py(y), slot*0.6, H-B-py(y))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="axis" text-anchor="middle">%s</text>`, x+slot*0.3, H-B+16, names[i])
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="axis" text-anchor="middle">%.1f</text>`, x+slot*0.3, py(y)-4, y)
	}
	fmt.Fprintf(&b, `<text x="12" y="%.1f" class="axis" transform="rotate(-90 12 %.1f)" text-anchor="middle">%s</text>`,
		(H-B+T)/2, (H-B+T)/2, template.HTMLEscapeString(unit))
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
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
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="axis" text-anchor="middle">%.3gs</text>`, px(x), H-B+16, x)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="axis" text-anchor="middle">seconds since the start</text>`, (L+W-R)/2, H-4)
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
pre.cmd { white-space: pre-wrap; word-break: break-all; font-size: 12px; }
table.head { border-collapse: collapse; margin: 12px 0; } table.head th { text-align: left; color: #57606a; font-weight: 400; padding: 3px 16px 3px 0; }
table.head td { font-size: 17px; font-weight: 600; padding: 3px 0; }
svg { width: 100%; height: auto; margin: 12px 0; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; }
svg .grid { stroke: #eaeef2; } svg .axis { font-size: 11px; fill: #57606a; }
svg .title { font-size: 13px; font-weight: 600; fill: #1f2328; } svg .legend { font-size: 12px; }
</style></head><body>
<h1>Parley load test</h1>
<p class="sub">{{.Subtitle}} <span class="verdict">{{.R.Verdict}}</span></p>
<p class="sub">{{if .R.StartedAt}}{{.R.StartedAt}}{{end}}{{if .R.Revision}} · build {{.R.Revision}}{{end}}</p>
{{if .Command}}<pre class="cmd">{{.Command}}</pre>{{end}}
<table class="head">{{range .Headlines}}<tr><th>{{.Name}}</th><td>{{.Value}}</td></tr>{{end}}</table>
{{range .Charts}}{{.}}{{end}}
<h2>Summary</h2>
<pre>{{.Summary}}</pre>
</body></html>
`))
