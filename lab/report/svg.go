package report

import (
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/microfaas/microfaas/orchestrator/state"
)

// Palette is the colours of series, in order (Tableau 10: distinguishable,
// and readable on white).
var Palette = []string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"}

// StateColors colour worker states in lanes and legends.
var StateColors = map[state.Name]string{
	state.Off: "#eeeeee", state.Booting: "#f28e2b", state.Idle: "#76b7b2", state.Working: "#4e79a7", state.Stopping: "#bab0ac", state.Failed: "#e15759",
}

const (
	fontSize = 11
	// charWidth is a conservative glyph width of 11px sans-serif, used to
	// reserve room for labels: DejaVu Sans (what fc-match gives on a fresh
	// Debian) has 0.636 em digits, 7.0 px here; Liberation/Arial 0.556 em.
	charWidth = 7.2
	padTop    = 26 // title
	padRight  = 18
	padBottom = 40 // tick labels and axis label
	legendRow = 18
)

func textWidth(s string) float64 { return float64(len([]rune(s))) * charWidth }

func esc(s string) string { return html.EscapeString(s) }

// fmtNum formats a tick or value compactly: 1200 -> 1200, 0.25 -> 0.25.
func fmtNum(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	if v == 0 {
		return "0"
	}
	a := math.Abs(v)
	switch {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strings.TrimSuffix(strings.TrimRight(strconv.FormatFloat(v, 'f', 1, 64), "0"), ".")
	case a >= 1:
		return strings.TrimSuffix(strings.TrimRight(strconv.FormatFloat(v, 'f', 2, 64), "0"), ".")
	default:
		return strconv.FormatFloat(v, 'g', 2, 64)
	}
}

// xTicks returns at most n round ticks over [0, hi] whose labels, at the
// conservative glyph width, fit side by side along an axis pw pixels long.
func xTicks(hi float64, n int, pw float64) []float64 {
	for ; n > 2; n-- {
		t := niceTicks(0, hi, n)
		widest := 0.0
		for _, v := range t {
			widest = math.Max(widest, textWidth(fmtNum(v)))
		}
		if len(t) < 2 || pw*(t[1]-t[0])/hi >= widest+8 {
			return t
		}
	}
	return niceTicks(0, hi, 2)
}

// niceStep is a round step (1, 2, 2.5 or 5 times a power of ten) that
// divides [0, span] into about n parts.
func niceStep(span float64, n int) float64 {
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		hi = lo + 1
	}
	step := niceStep(hi-lo, n)
	var out []float64
	for v := math.Ceil(lo/step-1e-9) * step; v <= hi+step*1e-9; v += step {
		out = append(out, math.Round(v/step)*step)
	}
	return out
}

// niceMax rounds hi up to a round step, so the axis ends on a tick.
func niceMax(hi float64) float64 {
	if hi <= 0 {
		return 1
	}
	step := niceStep(hi, 5)
	return math.Ceil(hi/step-1e-9) * step
}

// Series is one line of a LineChart.
type Series struct {
	Name   string
	Color  string
	Points []Point
	Step   bool // draw as a step function that rises at each point (CDFs)
	// Back draws each point's value over the interval since the previous
	// point (meter samples: the mean power since the last sample).
	Back bool
}

// LineChart is an x-y plot with axes, ticks and a legend.
type LineChart struct {
	Title          string
	XLabel, YLabel string // with units, e.g. "time since start (s)"
	Width, Height  int
	Series         []Series
	XMax, YMax     float64 // 0: from the data
	LeftPad        float64 // 0: from the tick labels
	// LogX draws x on a log scale when the data spans more than a factor
	// of 30 (latencies of warm and freshly booted workers side by side).
	LogX bool
}

type frame struct {
	w, h, left, top, pw, ph float64
	xmax, ymax              float64
	logx                    bool
	lo, hi                  float64 // log10 of the x range when logx
}

func (f frame) x(v float64) float64 {
	if f.logx {
		l := math.Log10(math.Max(v, math.Pow(10, f.lo)))
		return f.left + (l-f.lo)/(f.hi-f.lo)*f.pw
	}
	return f.left + v/f.xmax*f.pw
}
func (f frame) y(v float64) float64 { return f.top + f.ph - v/f.ymax*f.ph }

// legend lays out entries in rows within width; it returns the SVG and its height.
func legend(names, colors []string, x0, y0, width float64, swatchRect bool) (string, float64) {
	if len(names) == 0 {
		return "", 0
	}
	var b strings.Builder
	x, y := x0, y0
	for i, n := range names {
		w := 18 + textWidth(n) + 14
		if x > x0 && x+w > x0+width {
			x, y = x0, y+legendRow
		}
		if swatchRect {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="12" height="10" fill="%s" stroke="#666" stroke-width="0.5"/>`, x, y-9, colors[i])
		} else {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2.5"/>`, x, y-4, x+12, y-4, colors[i])
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`, x+17, y, esc(n))
		x += w
	}
	return b.String(), y - y0 + legendRow
}

func svgOpen(w io.Writer, width, height float64, title string) {
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="%d" role="img"><title>%s</title>`,
		width, height, width, height, fontSize, esc(title))
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="#fff"/>`)
	if title != "" {
		fmt.Fprintf(w, `<text x="%.1f" y="16" text-anchor="middle" font-size="13" font-weight="bold">%s</text>`, width/2, esc(title))
	}
}

// axes draws the frame's x and y axes with ticks, grid and labels.
func axes(w io.Writer, f frame, xlabel, ylabel string, xticks, yticks []float64) {
	for _, t := range yticks {
		y := f.y(t)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`, f.left, y, f.left+f.pw, y)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`, f.left-5, y+4, fmtNum(t))
	}
	for _, t := range xticks {
		x := f.x(t)
		label := fmtNum(t)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, x, f.top+f.ph, x, f.top+f.ph+4)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="%s">%s</text>`, x, f.top+f.ph+16, tickAnchor(x, textWidth(label), f.w), label)
	}
	fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, f.left, f.top+f.ph, f.left+f.pw, f.top+f.ph)
	fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, f.left, f.top, f.left, f.top+f.ph)
	fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, f.left+f.pw/2, f.top+f.ph+32, esc(xlabel))
	if ylabel != "" {
		fmt.Fprintf(w, `<text transform="translate(12 %.1f) rotate(-90)" text-anchor="middle">%s</text>`, f.top+f.ph/2, esc(ylabel))
	}
}

// tickAnchor says how to anchor an x tick label at x so that it stays inside
// a figure of the given width whatever the font: centred where half of its
// estimated width fits on both sides, else anchored at the tick by the end
// that faces the figure's inside (the label then grows away from the edge,
// so a wider font than estimated cannot push it out).
func tickAnchor(x, width, figure float64) string {
	switch {
	case x+width/2 > figure-2:
		return "end"
	case x-width/2 < 2:
		return "start"
	}
	return "middle"
}

func yTickWidth(ticks []float64) float64 {
	m := 0.0
	for _, t := range ticks {
		m = math.Max(m, textWidth(fmtNum(t)))
	}
	return m
}

// Render writes the chart as an SVG element.
func (c LineChart) Render(w io.Writer) {
	width, height := float64(c.Width), float64(c.Height)
	xmax, ymax := c.XMax, c.YMax
	for _, s := range c.Series {
		for _, p := range s.Points {
			if c.XMax == 0 {
				xmax = math.Max(xmax, p.X)
			}
			if c.YMax == 0 {
				ymax = math.Max(ymax, p.Y)
			}
		}
	}
	xmin := math.Inf(1)
	for _, s := range c.Series {
		for _, p := range s.Points {
			if p.X > 0 {
				xmin = math.Min(xmin, p.X)
			}
		}
	}
	logx := c.LogX && xmin > 0 && xmax/xmin > 30
	xmax, ymax = niceMax(xmax), niceMax(ymax)
	yt := niceTicks(0, ymax, 5)
	// The last x tick sits on the plot's right edge: keep room for half its
	// label, centred under it.
	last := xmax
	if logx {
		last = math.Pow(10, math.Ceil(math.Log10(c.maxX())))
	}
	right := math.Max(padRight, textWidth(fmtNum(last))/2+4)
	xt := xTicks(xmax, 6, width-c.leftPad(yt)-right)
	var lo, hi float64
	if logx {
		lo, hi = math.Floor(math.Log10(xmin)), math.Ceil(math.Log10(c.maxX()))
		xt = nil
		for k := lo; k <= hi; k++ {
			xt = append(xt, math.Pow(10, k))
		}
	}
	left := c.leftPad(yt)
	var names, colors []string
	for _, s := range c.Series {
		if s.Name != "" {
			names, colors = append(names, s.Name), append(colors, s.Color)
		}
	}
	pw := width - left - right
	legendSVG, lh := legend(names, colors, left, height+12, pw, false)
	height += lh
	f := frame{w: width, h: height, left: left, top: padTop, pw: pw, ph: float64(c.Height) - padTop - padBottom, xmax: xmax, ymax: ymax,
		logx: logx, lo: lo, hi: hi}
	svgOpen(w, width, height, c.Title)
	xlabel := c.XLabel
	if logx {
		xlabel += ", log scale"
	}
	axes(w, f, xlabel, c.YLabel, xt, yt)
	for _, s := range c.Series {
		var d strings.Builder
		for i, p := range s.Points {
			x, y := f.x(math.Min(p.X, xmax)), f.y(math.Min(p.Y, ymax))
			switch {
			case i == 0 && s.Step:
				fmt.Fprintf(&d, "M%.1f %.1f H%.1f V%.1f", f.left, f.y(0), x, y)
			case i == 0:
				fmt.Fprintf(&d, "M%.1f %.1f", x, y)
			case s.Step:
				fmt.Fprintf(&d, " H%.1f V%.1f", x, y)
			case s.Back:
				fmt.Fprintf(&d, " V%.1f H%.1f", y, x)
			default:
				fmt.Fprintf(&d, " L%.1f %.1f", x, y)
			}
		}
		if len(s.Points) == 1 && !s.Step {
			p := s.Points[0]
			fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, f.x(p.X), f.y(p.Y), s.Color)
		}
		fmt.Fprintf(w, `<path d="%s" fill="none" stroke="%s" stroke-width="1.8"/>`, d.String(), s.Color)
	}
	io.WriteString(w, legendSVG)
	io.WriteString(w, "</svg>\n")
}

// leftPad is the room left of the plot: the y tick labels and axis label.
func (c LineChart) leftPad(yticks []float64) float64 {
	if c.LeftPad != 0 {
		return c.LeftPad
	}
	return 26 + yTickWidth(yticks) + 6
}

func (c LineChart) maxX() float64 {
	m := 0.0
	for _, s := range c.Series {
		for _, p := range s.Points {
			m = math.Max(m, p.X)
		}
	}
	return m
}

// BarChart is a horizontal bar chart: one row per category, its values
// either stacked (segments of one bar) or grouped (one thin bar each).
type BarChart struct {
	Title    string
	XLabel   string // the value axis, with units
	Width    int
	Rows     []string    // category labels, top to bottom
	Series   []string    // segment or group names
	Colors   []string    // per series
	Values   [][]float64 // [row][series]
	Stacked  bool
	Annotate bool // print each bar's total (stacked) or value (grouped) at its end
	XMax     float64
}

// Render writes the chart as an SVG element.
func (c BarChart) Render(w io.Writer) {
	width := float64(c.Width)
	labelW := 0.0
	for _, r := range c.Rows {
		labelW = math.Max(labelW, textWidth(r))
	}
	left := labelW + 14
	barH, gap := 14.0, 6.0
	if !c.Stacked && len(c.Series) > 1 {
		barH = math.Max(6, 22/float64(len(c.Series)))
	}
	rowH := gap
	if c.Stacked {
		rowH += barH
	} else {
		rowH += barH * float64(len(c.Series))
	}
	xmax := c.XMax
	for _, vs := range c.Values {
		tot := 0.0
		for _, v := range vs {
			if c.Stacked {
				tot += v
			} else {
				tot = math.Max(tot, v)
			}
		}
		xmax = math.Max(xmax, tot)
	}
	xmax = niceMax(xmax)
	annotW := 0.0
	if c.Annotate {
		annotW = textWidth(fmtNum(xmax*10)) + 6
	}
	pw := width - left - padRight - annotW
	ph := rowH * float64(len(c.Rows))
	legendSVG, lh := legend(c.Series, c.Colors, left, padTop+ph+padBottom+14, pw, true)
	if len(c.Series) == 1 {
		legendSVG, lh = "", 0
	}
	height := padTop + ph + padBottom + lh
	f := frame{w: width, h: height, left: left, top: padTop, pw: pw, ph: ph, xmax: xmax, ymax: 1}
	svgOpen(w, width, height, c.Title)
	xt := xTicks(xmax, 6, pw)
	for _, t := range xt {
		x := f.x(t)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`, x, f.top, x, f.top+ph)
	}
	axes(w, f, c.XLabel, "", xt, nil)
	for i, label := range c.Rows {
		y0 := padTop + float64(i)*rowH + gap/2
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`, left-6, y0+(rowH-gap)/2+4, esc(label))
		x := left
		end := 0.0
		for j, v := range c.Values[i] {
			bw := v / xmax * pw
			if c.Stacked {
				if bw > 0 {
					fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`, x, y0, bw, barH, c.Colors[j], esc(label), esc(c.Series[j]), fmtNum(v))
				}
				x += bw
				end += v
			} else {
				y := y0 + float64(j)*barH
				fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`, left, y, bw, barH-1, c.Colors[j], esc(label), esc(c.Series[j]), fmtNum(v))
				if c.Annotate && len(c.Series) == 1 {
					fmt.Fprintf(w, `<text x="%.1f" y="%.1f">%s</text>`, left+bw+4, y+barH-3, fmtNum(v))
				}
			}
		}
		if c.Stacked && c.Annotate {
			fmt.Fprintf(w, `<text x="%.1f" y="%.1f">%s</text>`, x+4, y0+barH-3, fmtNum(end))
		}
	}
	io.WriteString(w, legendSVG)
	io.WriteString(w, "</svg>\n")
}

// Lanes draws worker states over time, one lane per worker.
type Lanes struct {
	Title     string
	Width     int
	LeftPad   float64 // align with a chart above (0: from the labels)
	XMax      float64 // seconds
	Workers   []string
	Intervals []LaneInterval
}

// LaneInterval is one state interval, in seconds since the run's start.
type LaneInterval struct {
	Worker   string
	State    state.Name
	From, To float64
}

// Render writes the lanes as an SVG element.
func (c Lanes) Render(w io.Writer) {
	width := float64(c.Width)
	labelW := 0.0
	for _, id := range c.Workers {
		labelW = math.Max(labelW, textWidth(id))
	}
	left := math.Max(c.LeftPad, labelW+14)
	laneH := 16.0
	if len(c.Workers) > 16 {
		laneH = 9
	}
	ph := laneH * float64(len(c.Workers))
	xmax := niceMax(c.XMax)
	pw := width - left - padRight
	var labels, colors []string
	for _, s := range []state.Name{state.Booting, state.Idle, state.Working, state.Stopping, state.Failed} {
		labels, colors = append(labels, string(s)), append(colors, StateColors[s])
	}
	legendSVG, lh := legend(labels, colors, left, padTop+ph+padBottom+14, pw, true)
	height := padTop + ph + padBottom + lh
	f := frame{w: width, h: height, left: left, top: padTop, pw: pw, ph: ph, xmax: xmax, ymax: 1}
	svgOpen(w, width, height, c.Title)
	lane := map[string]int{}
	for i, id := range c.Workers {
		lane[id] = i
		y := padTop + float64(i)*laneH
		fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, left, y+1, pw, laneH-2, StateColors[state.Off])
		if laneH >= 12 || i%2 == 0 {
			fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`, left-6, y+laneH/2+4, esc(id))
		}
	}
	for _, iv := range c.Intervals {
		i, ok := lane[iv.Worker]
		col, known := StateColors[iv.State]
		if !ok || !known || iv.State == state.Off {
			continue
		}
		x0, x1 := f.x(math.Max(iv.From, 0)), f.x(math.Min(iv.To, xmax))
		fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.2f" height="%.1f" fill="%s"/>`, x0, padTop+float64(i)*laneH+1, math.Max(x1-x0, 0.6), laneH-2, col)
	}
	axes(w, f, "time since start (s)", "", xTicks(xmax, 6, pw), nil)
	io.WriteString(w, legendSVG)
	io.WriteString(w, "</svg>\n")
}
