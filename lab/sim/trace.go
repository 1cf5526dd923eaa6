package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrTrace is wrapped by errors about a trace file.
var ErrTrace = errors.New("bad trace")

// TraceCall is one call of a trace: its time from the trace's first call.
type TraceCall struct {
	At       time.Duration
	Function string
}

// ReadTrace reads a trace CSV: a header naming a timestamp column
// (timestamp, time or t) and a function column (function), then one call
// per line. A timestamp is RFC 3339, or seconds (a decimal number: from
// any origin, e.g. Unix time or from the trace's start). Calls are sorted
// by time and made relative to the first.
func ReadTrace(r io.Reader) ([]TraceCall, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v (want timestamp,function)", ErrTrace, err)
	}
	ts, fn := -1, -1
	for i, h := range head {
		switch strings.ToLower(strings.TrimSpace(h)) {
		case "timestamp", "time", "t":
			ts = i
		case "function":
			fn = i
		}
	}
	if ts < 0 || fn < 0 {
		return nil, fmt.Errorf("%w: header %q: want a timestamp and a function column (timestamp,function)", ErrTrace, strings.Join(head, ","))
	}
	type call struct {
		at time.Time
		f  string
	}
	var calls []call
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTrace, err)
		}
		if len(rec) <= max(ts, fn) {
			return nil, fmt.Errorf("%w: line %d: want %d fields", ErrTrace, line, len(head))
		}
		at, err := parseTime(strings.TrimSpace(rec[ts]))
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrTrace, line, err)
		}
		f := strings.TrimSpace(rec[fn])
		if f == "" {
			return nil, fmt.Errorf("%w: line %d: no function", ErrTrace, line)
		}
		calls = append(calls, call{at, f})
	}
	if len(calls) == 0 {
		return nil, fmt.Errorf("%w: no calls", ErrTrace)
	}
	sort.SliceStable(calls, func(i, j int) bool { return calls[i].at.Before(calls[j].at) })
	out := make([]TraceCall, len(calls))
	for i, c := range calls {
		out[i] = TraceCall{At: c.at.Sub(calls[0].at), Function: c.f}
	}
	return out, nil
}

func parseTime(s string) (time.Time, error) {
	if v, err := strconv.ParseFloat(s, 64); err == nil {
		if v < 0 || v > 1e11 {
			return time.Time{}, fmt.Errorf("timestamp %s: seconds out of range", s)
		}
		return time.Unix(0, 0).Add(time.Duration(v * 1e9)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q: want RFC 3339 or seconds", s)
	}
	return t, nil
}
