package loadgen

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// PrintBars draws each function's p50 and p95 latency as text bars.
func PrintBars(w io.Writer, rows []Row) {
	var top time.Duration
	for _, r := range rows {
		top = max(top, r.P95)
	}
	if top == 0 {
		return
	}
	const width = 50
	fmt.Fprintf(w, "latency (# = p50, + = up to p95; full width = %s)\n", top.Round(time.Millisecond))
	for _, r := range rows {
		p50 := int(float64(width) * float64(r.P50) / float64(top))
		p95 := int(float64(width) * float64(r.P95) / float64(top))
		fmt.Fprintf(w, "%-18s |%s%s\n", r.Function, strings.Repeat("#", p50), strings.Repeat("+", max(0, p95-p50)))
	}
}

// SVG renders p50 and p95 latency per function as a bar chart.
func SVG(rows []Row) string {
	var top time.Duration
	for _, r := range rows {
		top = max(top, r.P95)
	}
	if top == 0 {
		top = time.Millisecond
	}
	const rowH, left, width = 28, 170, 520
	h := rowH*len(rows) + 60
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+90, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14">MicroFaaS latency per function (submit to result): p50 dark, p95 light</text>`+"\n")
	for i, r := range rows {
		y := 40 + i*rowH
		w95 := float64(width) * float64(r.P95) / float64(top)
		w50 := float64(width) * float64(r.P50) / float64(top)
		fmt.Fprintf(&b, `<text x="10" y="%d">%s (n=%d)</text>`+"\n", y+15, r.Function, r.Count)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="18" fill="#9ecae1"/>`+"\n", left, y, w95)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="18" fill="#3182bd"/>`+"\n", left, y, w50)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%d / %d ms</text>`+"\n", float64(left)+w95+5, y+14, r.P50.Milliseconds(), r.P95.Milliseconds())
	}
	b.WriteString("</svg>\n")
	return b.String()
}
