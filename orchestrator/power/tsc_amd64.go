package power

import (
	"os"
	"strings"
	"sync"
	"time"
)

func rdtsc() uint64

var (
	tscOnce sync.Once
	tscKHz  uint64
)

// HostTSCkHz measures the host's time-stamp counter frequency, or returns 0
// when the host's TSC is not constant. Under TCG a guest's TSC runs at the
// host's rate; telling the guest kernel (tsc_early_khz=) spares it a
// calibration against the emulated PIT that fails on a loaded host and
// leaves it with a 4 ms jiffies clock.
func HostTSCkHz() uint64 {
	tscOnce.Do(func() {
		b, err := os.ReadFile("/proc/cpuinfo")
		if err != nil || !strings.Contains(string(b), "constant_tsc") {
			return
		}
		t0, c0 := time.Now(), rdtsc()
		time.Sleep(50 * time.Millisecond)
		c1, t1 := rdtsc(), time.Now()
		tscKHz = uint64(float64(c1-c0) / t1.Sub(t0).Seconds() / 1000)
	})
	return tscKHz
}
