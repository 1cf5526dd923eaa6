package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/runtime/shiplog"
)

// functionSecret is what test_log_sleep writes to its stderr: it comes back
// with the result, never in the worker's log.
const functionSecret = "function-stderr-not-for-the-worker-log"

func init() {
	functions.Register("test_log_sleep", func(ctx context.Context, env functions.Env, _ json.RawMessage) (any, error) {
		fmt.Fprintln(env.Log, functionSecret)
		select {
		case <-time.After(300 * time.Millisecond):
			return "slept", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// logSession is what the orchestrator side of one session saw.
type logSession struct {
	batches   []protocol.LogBatch
	lines     int
	dropped   int
	bytes     int
	result    protocol.Result
	resultIn  time.Duration // job sent to result received
	afterJob  time.Duration // how long the session stayed open after the result
	hangup    time.Duration // from the power-off command to the worker hanging up
	duringJob int           // log frames between the job and its result
	malformed error
}

// serveLogSession is an orchestrator side: handshake, one job, the result
// (log frames read whenever they come), then a while more of logs, then
// power off.
func serveLogSession(t *testing.T, c net.Conn, keys protocol.KeyFunc, accepts []string, linger time.Duration) *logSession {
	defer c.Close()
	s := &logSession{}
	pc, _, err := protocol.ServerHandshakeAccepts(c, c.RemoteAddr(), keys, accepts)
	if err != nil {
		t.Errorf("orchestrator side: %v", err)
		return s
	}
	read := func(until time.Time) (bool, error) { // true: the result came
		c.SetReadDeadline(until)
		typ, body, err := pc.Receive()
		if err != nil {
			return false, err
		}
		switch typ {
		case protocol.TypeLog:
			var b protocol.LogBatch
			if err := json.Unmarshal(body, &b); err != nil {
				return false, err
			}
			s.batches = append(s.batches, b)
			s.lines += len(b.Lines)
			s.dropped += b.Dropped
			for _, l := range b.Lines {
				s.bytes += len(l.Text)
			}
		case protocol.TypeResult:
			return true, json.Unmarshal(body, &s.result)
		default:
			return false, fmt.Errorf("unexpected %s frame", typ)
		}
		return false, nil
	}
	start := time.Now()
	if err := pc.Send(protocol.TypeJob, protocol.Job{ID: "inv1", Function: "test_log_sleep", TimeoutMS: 10000}); err != nil {
		t.Error(err)
		return s
	}
	for {
		done, err := read(start.Add(10 * time.Second))
		if err != nil {
			t.Errorf("orchestrator side: %v", err)
			return s
		}
		if done {
			break
		}
		s.duringJob++
	}
	s.resultIn = time.Since(start)
	end := time.Now().Add(linger)
	for time.Now().Before(end) {
		if _, err := read(end); err != nil {
			break // the deadline
		}
	}
	c.SetReadDeadline(time.Time{})
	pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff})
	off := time.Now()
	// As mforch does, read on until the worker hangs up: the log it
	// flushes on its way out.
	for {
		if _, err := read(time.Now().Add(5 * time.Second)); err != nil {
			break
		}
	}
	s.afterJob = time.Since(start) - s.resultIn
	s.hangup = time.Since(off)
	return s
}

// runLogWorker runs one worker session against serveLogSession over
// loopback TCP.
func runLogWorker(t *testing.T, ring *shiplog.Ring, shipper *shiplog.Shipper, accepts []string, linger time.Duration) *logSession {
	t.Helper()
	secret := []byte("0123456789abcdef0123456789abcdef")
	key, err := protocol.WorkerKey(secret, "vm0")
	if err != nil {
		t.Fatal(err)
	}
	keys := protocol.ClusterKeys(secret, map[string]string{"vm0": ""})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *logSession, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- &logSession{}
			return
		}
		got <- serveLogSession(t, c, keys, accepts, linger)
	}()
	w := &Worker{Config: Config{ID: "vm0", Orch: ln.Addr().String(), Failsafe: 20 * time.Second}, Key: key,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: func() float64 { return 1 },
		Logs: ring, LogShipper: shipper}
	out := w.Run(context.Background())
	if out.Action != protocol.CmdPowerOff || out.Reason != "told by the orchestrator" {
		t.Errorf("outcome %+v", out)
	}
	return <-got
}

// TestWorkerShipsLogs: after its hello the worker sends its log (kernel
// and mfinit lines) to an orchestrator that accepts log frames, and none to
// one that does not (an orchestrator built before them); the function's
// stderr comes back with its result, never in the log.
func TestWorkerShipsLogs(t *testing.T) {
	for _, accepts := range []bool{true, false} {
		t.Run(fmt.Sprintf("accepts=%v", accepts), func(t *testing.T) {
			var offer []string
			if accepts {
				offer = []string{protocol.FeatureLog}
			}
			ring := shiplog.NewRing(0, 0)
			ring.Add(protocol.LogLine{Source: protocol.LogKernel, Text: "[    0.000000] Linux version 6.1.0"})
			mf := shiplog.NewWriter(ring, protocol.LogMfinit)
			log := slog.New(slog.NewTextHandler(mf, nil))
			log.Info("boot step done", "step", "network")
			s := runLogWorker(t, ring, &shiplog.Shipper{Linger: time.Millisecond}, offer, 200*time.Millisecond)
			if s.result.Result == nil || !strings.Contains(s.result.Log, functionSecret) {
				t.Fatalf("result %+v: want the function's result and its stderr", s.result)
			}
			var text []string
			for _, b := range s.batches {
				for _, l := range b.Lines {
					text = append(text, l.Source+" "+l.Text)
				}
			}
			all := strings.Join(text, "\n")
			if strings.Contains(all, functionSecret) {
				t.Errorf("the function's stderr is in the worker log:\n%s", all)
			}
			if !accepts {
				if len(s.batches) > 0 {
					t.Errorf("sent %d log frames to an orchestrator that takes none", len(s.batches))
				}
				return
			}
			for _, want := range []string{"kernel [    0.000000] Linux version", "mfinit time=", "msg=\"boot step done\" step=network"} {
				if !strings.Contains(all, want) {
					t.Errorf("log lacks %q:\n%s", want, all)
				}
			}
		})
	}
}

// TestLogFloodDoesNotSlowJob: the kernel floods its log during a job. The
// job's result comes as fast as without the flood, what goes on the wire
// stays under the rate limit, the worker's buffer stays bounded, and every
// line is either shipped or counted as dropped.
func TestLogFloodDoesNotSlowJob(t *testing.T) {
	const rate, burst = 32 << 10, 32 << 10
	shipper := &shiplog.Shipper{Rate: rate, Burst: burst, Linger: 5 * time.Millisecond}
	logs := []string{protocol.FeatureLog}
	base := runLogWorker(t, shiplog.NewRing(0, 0), shipper, logs, 0)

	ring := shiplog.NewRing(0, 0)
	stop := make(chan struct{})
	flooded := make(chan int)
	maxHeld := 0
	go func() {
		n := 0
		defer func() { flooded <- n }()
		deadline := time.Now().Add(30 * time.Second) // bounded in time and count
		for ; n < 5_000_000 && time.Now().Before(deadline); n++ {
			select {
			case <-stop:
				return
			default:
			}
			ring.Add(protocol.LogLine{Source: protocol.LogKernel,
				Text: fmt.Sprintf("[%5d.%06d] flood: message %d from a misbehaving driver", n/1000, n%1000, n)})
			if n%1024 == 0 {
				lines, bytes := ring.Len()
				if bytes > shiplog.DefaultMaxBytes || lines > shiplog.DefaultMaxLines {
					t.Errorf("ring holds %d lines, %d bytes: over its bounds", lines, bytes)
				}
				maxHeld = max(maxHeld, bytes)
			}
		}
	}()
	s := runLogWorker(t, ring, shipper, logs, 500*time.Millisecond)
	close(stop)
	added := <-flooded
	held, _ := ring.Len()
	_, pending := ring.Take(0)

	t.Logf("job result in %s without the flood, %s with %d kernel lines flooded (%d shipped in %d frames, %d bytes; %d dropped); hung up %s after power-off",
		base.resultIn, s.resultIn, added, s.lines, len(s.batches), s.bytes, s.dropped, s.hangup)
	if s.result.Result == nil {
		t.Fatalf("no result under the flood: %+v", s.result)
	}
	// The job sleeps 300 ms: the flood must not hold its result back, and
	// the worker holds its log while the job runs.
	if s.duringJob > 0 {
		t.Errorf("%d log frames came between the job and its result", s.duringJob)
	}
	if s.resultIn > base.resultIn+500*time.Millisecond {
		t.Errorf("result after %s under the flood, %s without", s.resultIn, base.resultIn)
	}
	// The worker waits for the lines it held at the end, not for the
	// flood: it powers off as soon as without it.
	if s.hangup > 250*time.Millisecond {
		t.Errorf("the worker hung up %s after the power-off command under the flood", s.hangup)
	}
	elapsed := (s.resultIn + s.afterJob).Seconds()
	if limit := float64(burst) + rate*elapsed + protocol.MaxLogBatch; float64(s.bytes) > limit {
		t.Errorf("shipped %d bytes of text in %.2f s: over the limit of %.0f", s.bytes, elapsed, limit)
	}
	if s.dropped == 0 || s.lines == 0 {
		t.Errorf("shipped %d lines, dropped %d: a flood over the rate ships some and drops the rest", s.lines, s.dropped)
	}
	// Lines the last frames were sending when the session closed are lost
	// uncounted only if they were in flight; allow one frame's worth.
	if missing := added - (s.lines + s.dropped + held + pending); missing < 0 || missing > protocol.MaxLogBatch {
		t.Errorf("added %d, shipped %d, dropped %d, held %d, pending drops %d: %d unaccounted", added, s.lines, s.dropped, held, pending, missing)
	}
	for _, b := range s.batches {
		size := 0
		for _, l := range b.Lines {
			size += len(l.Text)
		}
		if size > protocol.MaxLogBatch {
			t.Errorf("a frame of %d bytes of text: over protocol.MaxLogBatch", size)
		}
	}
}

// TestWorkerShipsLogsWithoutJob: a worker given no job (kept ready) sends
// its log after logIdleStart, without waiting for one.
func TestWorkerShipsLogsWithoutJob(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	key, _ := protocol.WorkerKey(secret, "vm0")
	keys := protocol.ClusterKeys(secret, map[string]string{"vm0": ""})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	first := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			first <- err.Error()
			return
		}
		defer c.Close()
		pc, _, err := protocol.ServerHandshakeAccepts(c, c.RemoteAddr(), keys, []string{protocol.FeatureLog})
		if err != nil {
			first <- err.Error()
			return
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		typ, _, err := pc.Receive()
		if err != nil {
			typ = err.Error()
		}
		first <- typ
		c.SetReadDeadline(time.Time{})
		pc.Send(protocol.TypeCommand, protocol.Command{Action: protocol.CmdPowerOff})
		io.Copy(io.Discard, c)
	}()
	ring := shiplog.NewRing(0, 0)
	ring.Add(protocol.LogLine{Source: protocol.LogKernel, Text: "[    0.000000] Linux version"})
	w := &Worker{Config: Config{ID: "vm0", Orch: ln.Addr().String(), Failsafe: 20 * time.Second}, Key: key,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: func() float64 { return 1 }, Logs: ring}
	start := time.Now()
	go w.Run(context.Background())
	if got := <-first; got != protocol.TypeLog {
		t.Fatalf("first frame after the hello: %s, want a log frame", got)
	}
	if d := time.Since(start); d < logIdleStart {
		t.Errorf("log sent %s after start: before logIdleStart (%s) without a job", d, logIdleStart)
	}
}
