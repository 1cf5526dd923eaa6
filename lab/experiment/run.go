package experiment

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/microfaas/microfaas/lab/loadgen"
	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/state"
)

// Cluster is what the runner needs of an orchestrator: run one invocation
// to its end. The orchestrator itself writes the run's results CSV (its
// recorder points at Run.ResultsPath) and reports worker state changes to
// Run.StateChanged.
type Cluster interface {
	// Invoke runs function with args and returns once it finished. When
	// ctx is cancelled an invocation that has not started is withdrawn.
	Invoke(ctx context.Context, function string, args json.RawMessage) (Result, error)
}

// Result is what the runner learns of one finished invocation.
type Result struct {
	ID     string
	Worker string
	Err    string // the invocation's error ("" when it succeeded)
}

// Run is one run folder being written.
type Run struct {
	Dir  string
	Spec *Spec

	mu        sync.Mutex
	timeline  *csv.Writer
	tlFile    *os.File
	meter     *csv.Writer
	meterFile *os.File
	open      map[string]state.Change // each worker's current state
	summary   report.Summary
	done      int
	failed    int
	now       func() time.Time
}

// Create makes the run folder dir (it must not exist or be empty) and
// writes the experiment file into it.
func Create(dir string, spec *Spec, file []byte) (*Run, error) {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("run folder %s exists and is not empty: choose another --out", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &Run{Dir: dir, Spec: spec, open: map[string]state.Change{}, now: time.Now}
	if err := os.WriteFile(filepath.Join(dir, report.ExperimentFile), file, 0o644); err != nil {
		return nil, err
	}
	var err error
	if r.tlFile, err = os.Create(filepath.Join(dir, report.TimelineFile)); err != nil {
		return nil, err
	}
	r.timeline = csv.NewWriter(r.tlFile)
	r.timeline.Write([]string{"worker", "state", "start_unix_ns", "end_unix_ns", "invocation"})
	r.timeline.Flush()
	if !spec.Meter.None {
		if r.meterFile, err = os.Create(filepath.Join(dir, report.MeterFile)); err != nil {
			return nil, err
		}
		r.meter = csv.NewWriter(r.meterFile)
		r.meter.Write([]string{"t_unix_ns", "watts", "source"})
		r.meter.Flush()
	}
	r.summary = report.Summary{Name: spec.Name, Planned: spec.Invocations, Workers: spec.WorkerCount(),
		Mode: spec.Mode, Arrival: spec.Arrival.Process, Rate: spec.Arrival.Rate, Seed: spec.Seed,
		Functions: spec.Functions, Meter: spec.Meter.String(), WorkerKind: "qemu"}
	if spec.Arrival.Process == ClosedLoop {
		r.summary.Rate = 0
		r.summary.Concurrency = spec.Arrival.Concurrency
	}
	if spec.Mode == Warm {
		r.summary.Idle = time.Duration(spec.Idle).String()
	}
	if spec.Workers.Cluster != "" {
		r.summary.WorkerKind = "cluster"
	}
	return r, nil
}

// ResultsPath is where the orchestrator's recorder writes the results CSV.
func (r *Run) ResultsPath() string { return filepath.Join(r.Dir, report.ResultsFile) }

// SetWorkers records the number and kind of workers (for cluster files and
// simulated workers, which the spec does not count).
func (r *Run) SetWorkers(n int, kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.summary.Workers, r.summary.WorkerKind = n, kind
}

// SetHost records the host facts.
func (r *Run) SetHost(h report.HostFacts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.summary.Host = h
}

// StateChanged records a worker state change: the interval of the state it
// left goes to timeline.csv at once. It never blocks for long: the
// orchestrator calls it from its loop.
func (r *Run) StateChanged(c state.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.open[c.Worker]; ok {
		r.writeInterval(prev, c.At)
	}
	r.open[c.Worker] = c
}

func (r *Run) writeInterval(s state.Change, end time.Time) {
	if s.To == state.Off || s.To == "" || !end.After(s.At) {
		return
	}
	r.timeline.Write([]string{s.Worker, string(s.To), strconv.FormatInt(s.At.UnixNano(), 10), strconv.FormatInt(end.UnixNano(), 10), s.Invocation})
	r.timeline.Flush()
}

// AddSample records a power sample of the whole meter (Worker "") in
// meter.csv; per-board series are the energy accountant's alone.
func (r *Run) AddSample(s energy.Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.meter == nil || s.Worker != "" {
		return
	}
	r.meter.Write([]string{strconv.FormatInt(s.At.UnixNano(), 10), strconv.FormatFloat(s.Watts, 'f', 3, 64), s.Source})
	r.meter.Flush()
}

// CopyManifest copies a build manifest (kernel or initramfs) into the run
// folder's manifests/ as name; a missing manifest is noted, not an error.
func (r *Run) CopyManifest(src, name string) error {
	b, err := os.ReadFile(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(r.Dir, "manifests"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.Dir, "manifests", name), b, 0o644)
}

// Options tune Execute.
type Options struct {
	Meter energy.Meter
	// Progress gets a progress line ("\r"-updated) every Tick; nil: none.
	Progress io.Writer
	Tick     time.Duration // default 500 ms
	// Settle, if set, is called after the last invocation returned and
	// before the timeline is closed: it waits for the workers to power
	// off, so their last intervals are recorded whole.
	Settle func()
}

// Execute runs the spec's invocations against c. Cancelling ctx stops
// submitting; invocations not yet started are withdrawn and running ones
// finish; the summary then says the run was interrupted. Execute always
// writes summary.json, so the folder stays readable.
func (r *Run) Execute(ctx context.Context, c Cluster, opt Options) (report.Summary, error) {
	calls := r.Spec.Calls()
	gaps := r.Spec.Gaps()
	start := r.now()
	r.mu.Lock()
	r.summary.Started = start
	r.mu.Unlock()

	meterCtx, stopMeter := context.WithCancel(context.Background())
	var meterWG sync.WaitGroup
	if opt.Meter != nil {
		meterWG.Add(1)
		go func() {
			defer meterWG.Done()
			opt.Meter.Run(meterCtx, r.AddSample)
		}()
	}
	stopProgress := r.progress(opt, start)

	var wg sync.WaitGroup
	invoke := func(call loadgen.Call) {
		res, err := c.Invoke(ctx, call.Function, call.Args)
		r.mu.Lock()
		r.done++
		if err != nil || res.Err != "" {
			r.failed++
		}
		r.mu.Unlock()
	}
	if gaps == nil {
		r.mu.Lock()
		n := r.Spec.Arrival.Concurrency
		if n <= 0 {
			n = max(r.summary.Workers, 1)
		}
		r.summary.Concurrency = n
		r.mu.Unlock()
		next := make(chan loadgen.Call)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for call := range next {
					invoke(call)
				}
			}()
		}
	feed:
		for _, call := range calls {
			select {
			case next <- call:
			case <-ctx.Done():
				break feed
			}
		}
		close(next)
	} else {
		timer := time.NewTimer(0)
		<-timer.C
	open:
		for i, call := range calls {
			if gaps[i] > 0 {
				timer.Reset(gaps[i])
				select {
				case <-timer.C:
				case <-ctx.Done():
					break open
				}
			}
			if ctx.Err() != nil {
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				invoke(call)
			}()
		}
	}
	wg.Wait()
	stopProgress()
	end := r.now()
	if opt.Settle != nil {
		opt.Settle()
	}
	stopMeter()
	meterWG.Wait()
	return r.finish(ctx.Err() != nil, end)
}

// finish closes the open state intervals and writes summary.json; end is
// when the last invocation returned.
func (r *Run) finish(interrupted bool, end time.Time) (report.Summary, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	for _, s := range r.open {
		r.writeInterval(s, now)
	}
	r.open = map[string]state.Change{}
	r.summary.Finished = end
	r.summary.Done, r.summary.Failed = r.done, r.failed
	r.summary.Interrupted = interrupted || r.done < r.summary.Planned
	b, err := json.MarshalIndent(r.summary, "", "  ")
	if err != nil {
		return r.summary, err
	}
	tmp := filepath.Join(r.Dir, report.SummaryFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return r.summary, err
	}
	return r.summary, os.Rename(tmp, filepath.Join(r.Dir, report.SummaryFile))
}

// Close closes the folder's files.
func (r *Run) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	if r.tlFile != nil {
		errs = append(errs, r.tlFile.Close())
	}
	if r.meterFile != nil {
		errs = append(errs, r.meterFile.Close())
	}
	return errors.Join(errs...)
}

// progress updates one line on opt.Progress: done/total, rate, failures, ETA.
func (r *Run) progress(opt Options, start time.Time) func() {
	if opt.Progress == nil {
		return func() {}
	}
	tick := opt.Tick
	if tick <= 0 {
		tick = 500 * time.Millisecond
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			r.mu.Lock()
			done, failed := r.done, r.failed
			r.mu.Unlock()
			fmt.Fprintf(opt.Progress, "\r\033[K%s", ProgressLine(done, failed, r.Spec.Invocations, time.Since(start)))
			select {
			case <-stop:
				fmt.Fprint(opt.Progress, "\r\033[K")
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(stop); wg.Wait() }
}

// ProgressLine is the progress text: "57/170 done, 1.90/s, 0 failed, ETA 59s".
func ProgressLine(done, failed, total int, elapsed time.Duration) string {
	rate := 0.0
	if elapsed > 0 {
		rate = float64(done) / elapsed.Seconds()
	}
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(total-done)/rate*float64(time.Second)) / time.Second * time.Second).String()
	}
	return fmt.Sprintf("%d/%d done, %.2f/s, %d failed, ETA %s", done, total, rate, failed, eta)
}
