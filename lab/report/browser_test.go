package report

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds Debian's chromium (scripts/install-deps.sh installs it).
// Without it the test skips, except under CI, where it fails.
func chromium(t *testing.T) string {
	for _, p := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := "chromium not installed (apt-get install -y chromium, or scripts/install-deps.sh): cannot check the report in a browser"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// layoutCheck runs in the page (the page itself has no script): it lists
// every SVG text that leaves its SVG or overlaps another text of it.
const layoutCheck = `(() => {
  const bad = [];
  const svgs = document.querySelectorAll('svg');
  for (const svg of svgs) {
    const s = svg.getBoundingClientRect();
    const title = (svg.querySelector('title') || {}).textContent || '?';
    const boxes = [];
    for (const t of svg.querySelectorAll('text')) {
      const r = t.getBoundingClientRect();
      if (r.width === 0) continue;
      if (r.left < s.left - 0.5 || r.right > s.right + 0.5 || r.top < s.top - 0.5 || r.bottom > s.bottom + 0.5)
        bad.push('cut off in "' + title + '": ' + t.textContent);
      for (const [u, o] of boxes) {
        const w = Math.min(r.right, o.right) - Math.max(r.left, o.left) - 1;
        const h = Math.min(r.bottom, o.bottom) - Math.max(r.top, o.top) - 1;
        if (w > 0 && h > 0) bad.push('overlap in "' + title + '": ' + u + ' / ' + t.textContent);
      }
      boxes.push([t.textContent, r]);
    }
  }
  const probe = document.createElement('canvas').getContext('2d');
  probe.font = '11px sans-serif';
  return {svgs: svgs.length, bad: bad, digits: probe.measureText('0123456789').width};
})()`

// fontSets are the fonts the report is checked with, forced on every
// figure by a style sheet: what fc-match gives for sans-serif on a fresh
// Debian (DejaVu Sans, wide digits) and Arial's metrics (Liberation Sans,
// narrow); scripts/install-deps.sh installs both.
var fontSets = []string{"DejaVu Sans", "Liberation Sans"}

// TestReportInChromium renders a two-run report in headless Chromium, once
// per font set, and fails on console errors, on labels cut off or
// overlapping, and on a blank page. The layout must not depend on the
// font's widths. It saves a full-page screenshot per font set
// (MF_SCREENSHOT=prefix keeps them).
func TestReportInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	bin := chromium(t)
	dir := t.TempDir()
	var runs []*Analysis
	for i, name := range []string{"power-cycled", "warm"} {
		d := filepath.Join(dir, name)
		boot := []float64{1500, 0.001}[i]
		writeSynthRun(t, d, name, 170, boot, uint64(i+1))
		r, err := Load(d)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, Analyze(r))
	}
	page := filepath.Join(dir, "report.html")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteHTML(f, runs, time.Now()); err != nil {
		t.Fatal(err)
	}
	f.Close()

	widths := map[float64]string{}
	for _, family := range fontSets {
		t.Run(strings.ReplaceAll(family, " ", "_"), func(t *testing.T) {
			digits := checkInChromium(t, bin, page, family)
			widths[digits] = family
		})
	}
	if len(widths) != len(fontSets) {
		t.Errorf("the font sets rendered digits of the same width (%v): the fontconfig override did not take, so only one font was checked", widths)
	}
}

// checkInChromium loads page in a browser, sets every figure in family and
// checks the layout; it returns the width of "0123456789" in 11px family.
func checkInChromium(t *testing.T, bin, page, family string) float64 {
	profile := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile), chromedp.WindowSize(1280, 900),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	// Subscribe before loading, and read the messages until the check ends.
	cctx, stopConsole := context.WithCancel(ctx)
	messages := chromedp.Console(cctx)
	var mu sync.Mutex
	var consoleErrs []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
				mu.Lock()
				consoleErrs = append(consoleErrs, m.String())
				mu.Unlock()
			}
		}
	}()
	type layout struct {
		SVGs   int      `json:"svgs"`
		Bad    []string `json:"bad"`
		Digits float64  `json:"digits"`
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+page), chromedp.WaitVisible("#comparison")); err != nil {
		t.Fatalf("chromium: loading the report: %v", err)
	}
	// A style sheet beats the SVG's font-family attribute.
	force := fmt.Sprintf(`(() => { const s = document.createElement('style');
  s.textContent = 'svg, svg text { font-family: %q !important; }';
  document.head.appendChild(s); return document.fonts.ready.then(() => true); })()`, family)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](force, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatalf("chromium: setting the font: %v", err)
	}
	result, err := chromedp.Run(ctx, chromedp.Evaluate[layout](strings.Replace(layoutCheck, "11px sans-serif", fmt.Sprintf("11px %q", family), 1)))
	if err != nil {
		t.Fatalf("chromium: layout check: %v", err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("chromium: screenshot: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // late console events
	stopConsole()
	wg.Wait()
	for _, e := range consoleErrs {
		t.Errorf("browser: %s", e)
	}
	if result.SVGs < 20 {
		t.Errorf("%d SVG figures rendered, want the report's full set (at least 20)", result.SVGs)
	}
	for _, b := range result.Bad {
		t.Errorf("layout with %s: %s", family, b)
	}
	shot := filepath.Join(filepath.Dir(page), strings.ReplaceAll(family, " ", "-")+".png")
	if prefix := os.Getenv("MF_SCREENSHOT"); prefix != "" {
		shot = prefix + "-" + strings.ReplaceAll(family, " ", "-") + ".png"
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(png), "\x89PNG") {
		t.Errorf("screenshot is not a PNG")
	}
	t.Logf("%s: screenshot %s: %d bytes; %d SVG figures; 11px digits %.1f px wide", family, shot, len(png), result.SVGs, result.Digits)
	return result.Digits
}
