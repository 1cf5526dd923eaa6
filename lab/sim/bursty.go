package sim

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// Bursty is a seeded arrival process shaped like a day of FaaS load: a
// Poisson process whose rate follows a daily sine around Mean (lowest at
// 04:00, highest at 16:00) and is multiplied by BurstFactor during bursts
// of BurstLength, which start at Poisson times BurstEvery apart on average.
type Bursty struct {
	Duration    time.Duration // default 24 h
	Mean        float64       // calls per second, the day's mean without bursts
	Swing       float64       // the daily sine's amplitude as a fraction of Mean (default 0.6)
	BurstEvery  time.Duration // mean gap between burst starts (default 20 min)
	BurstLength time.Duration // default 60 s
	BurstFactor float64       // default 5
	Functions   []string      // each call's function is drawn uniformly
	Seed        int64
}

// Trace draws the calls (by thinning a Poisson process at the peak rate).
func (b Bursty) Trace() ([]TraceCall, error) {
	if b.Duration <= 0 {
		b.Duration = 24 * time.Hour
	}
	if b.Swing == 0 {
		b.Swing = 0.6
	}
	if b.BurstEvery <= 0 {
		b.BurstEvery = 20 * time.Minute
	}
	if b.BurstLength <= 0 {
		b.BurstLength = time.Minute
	}
	if b.BurstFactor <= 0 {
		b.BurstFactor = 5
	}
	if b.Mean <= 0 || b.Swing < 0 || b.Swing > 1 || b.BurstFactor < 1 || len(b.Functions) == 0 {
		return nil, fmt.Errorf("%w: bursty trace: want mean > 0, 0 <= swing <= 1, burst factor >= 1 and functions", ErrConfig)
	}
	r := rand.New(rand.NewPCG(uint64(b.Seed), 0xb5))
	end := b.Duration.Seconds()
	var bursts [][2]float64
	for t := r.ExpFloat64() * b.BurstEvery.Seconds(); t < end; t += r.ExpFloat64() * b.BurstEvery.Seconds() {
		bursts = append(bursts, [2]float64{t, t + b.BurstLength.Seconds()})
	}
	rate := func(t float64) float64 {
		day := 1 - b.Swing*math.Cos(2*math.Pi*(t/86400-4.0/24))
		v := b.Mean * day
		for len(bursts) > 0 && bursts[0][1] <= t {
			bursts = bursts[1:]
		}
		if len(bursts) > 0 && bursts[0][0] <= t {
			v *= b.BurstFactor
		}
		return v
	}
	peak := b.Mean * (1 + b.Swing) * b.BurstFactor
	var out []TraceCall
	for t := r.ExpFloat64() / peak; t < end; t += r.ExpFloat64() / peak {
		if r.Float64()*peak < rate(t) {
			out = append(out, TraceCall{At: time.Duration(t * 1e9), Function: b.Functions[r.IntN(len(b.Functions))]})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: bursty trace: no calls in %s at %g/s", ErrConfig, b.Duration, b.Mean)
	}
	base := out[0].At
	for i := range out {
		out[i].At -= base
	}
	return out, nil
}

// WriteTrace writes calls as a trace CSV ReadTrace reads: timestamp in
// seconds from the first call, function.
func WriteTrace(w io.Writer, calls []TraceCall) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("timestamp,function\n")
	for _, c := range calls {
		bw.WriteString(strconv.FormatFloat(c.At.Seconds(), 'f', 6, 64))
		bw.WriteByte(',')
		bw.WriteString(c.Function)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}
