package sandbox

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Without cgroups (our kernels have none) a run is bounded by rlimits, a
// size on its /tmp, a low CPU priority and a high OOM score: a fork bomb
// stops at Procs, a memory bomb at Memory per process, and when memory
// runs out anyway the kernel kills the function, not the worker. What
// rlimits cannot bound: Procs × Memory can exceed the machine's memory
// (the OOM killer then picks the function).

var (
	defaultsOnce sync.Once
	defaults     Limits
)

// DefaultLimits are the limits of a run that sets none, from this
// machine's memory: half of it per process, a quarter for /tmp; nice 19
// on a worker.
func DefaultLimits() Limits {
	defaultsOnce.Do(func() {
		ram := uint64(512 << 20) // a BeagleBone's, if sysinfo fails
		var si unix.Sysinfo_t
		if unix.Sysinfo(&si) == nil && si.Totalram > 0 {
			ram = uint64(si.Totalram) * uint64(si.Unit)
		}
		defaults = Limits{
			// Threads count: a JVM or Node on a one-core worker has
			// well under a hundred.
			Procs:    128,
			Memory:   max(64<<20, ram/2),
			FileSize: max(16<<20, ram/4),
			Files:    1024,
			Tmp:      max(16<<20, ram/4),
		}
		// On a worker (PID 1) nothing else competes, so a niced function
		// loses nothing, and PID 1 keeps its share of the CPU against
		// Procs spinning threads. On a shared machine niceness would only
		// slow the function against everyone else's work (twice as slow
		// under load here): it keeps its priority there.
		if os.Getpid() == 1 {
			defaults.Nice = 19
		}
	})
	return defaults
}

// withDefaults fills the zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	set := func(v *uint64, def uint64) {
		if *v == 0 {
			*v = def
		}
	}
	set(&l.Procs, d.Procs)
	set(&l.Memory, d.Memory)
	set(&l.FileSize, d.FileSize)
	set(&l.Files, d.Files)
	set(&l.Tmp, d.Tmp)
	if l.Nice <= 0 || l.Nice > 19 {
		l.Nice = d.Nice // 0: unchanged
	}
	return l
}

// rlimits are the limits as (resource, value) pairs.
func (l Limits) rlimits() []struct {
	res int
	v   uint64
} {
	return []struct {
		res int
		v   uint64
	}{{unix.RLIMIT_NPROC, l.Procs}, {unix.RLIMIT_DATA, l.Memory}, {unix.RLIMIT_FSIZE, l.FileSize}, {unix.RLIMIT_NOFILE, l.Files}}
}

// cldTrapped is siginfo's si_code for a ptrace stop.
const cldTrapped = 4

// limitStarted applies l to the function pid, which its SysProcAttr.Ptrace
// stopped at its exec, before its first instruction (so nothing it starts
// escapes the limits), then lets it run. Only the thread that started it
// can do so. A function killed meanwhile is left for Wait to report.
func limitStarted(pid int, l Limits) error {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WSTOPPED|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sandbox: wait for the function to start: %w", err)
		}
		break
	}
	if info.Code != cldTrapped {
		return nil
	}
	err := limitProcess(pid, l)
	if derr := unix.PtraceDetach(pid); derr != nil && err == nil {
		err = fmt.Errorf("sandbox: let the function run: %w", derr)
	}
	return err
}

// limitProcess sets pid's rlimits (never above what it has), priority and
// OOM score.
func limitProcess(pid int, l Limits) error {
	for _, r := range l.rlimits() {
		err := unix.Prlimit(pid, r.res, &unix.Rlimit{Cur: r.v, Max: r.v}, nil)
		if errors.Is(err, unix.EPERM) {
			// Above its hard limit: lower to that instead.
			var cur unix.Rlimit
			if err = unix.Prlimit(pid, r.res, nil, &cur); err == nil {
				v := min(r.v, cur.Max)
				err = unix.Prlimit(pid, r.res, &unix.Rlimit{Cur: v, Max: v}, nil)
			}
		}
		if err != nil {
			return fmt.Errorf("sandbox: limit %d: %w", r.res, err)
		}
	}
	if l.Nice > 0 {
		if err := unix.Setpriority(unix.PRIO_PROCESS, pid, l.Nice); err != nil {
			return fmt.Errorf("sandbox: priority: %w", err)
		}
	}
	// The kernel's OOM killer never takes PID 1; make the function its
	// first choice over anything else the worker runs.
	if err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte("1000"), 0); err != nil {
		return fmt.Errorf("sandbox: OOM score: %w", err)
	}
	return nil
}

// limitSelf sets the limits on this process (the helper, which then
// starts the function with them). In a user namespace on kernels before
// 5.14, RLIMIT_NPROC counts every process of the user, not only the
// namespace's: it is left alone there.
func limitSelf(l Limits) error {
	for _, r := range l.rlimits() {
		if r.res == unix.RLIMIT_NPROC && !kernelAtLeast(5, 14) {
			continue
		}
		var cur syscall.Rlimit
		if err := syscall.Getrlimit(r.res, &cur); err != nil {
			return fmt.Errorf("limits: %w", err)
		}
		v := min(r.v, cur.Max)
		// syscall's Setrlimit, so that the child gets this RLIMIT_NOFILE
		// rather than the one Go saved at start-up.
		if err := syscall.Setrlimit(r.res, &syscall.Rlimit{Cur: v, Max: v}); err != nil {
			return fmt.Errorf("limit %d: %w", r.res, err)
		}
	}
	if l.Nice > 0 {
		if err := unix.Setpriority(unix.PRIO_PROCESS, 0, l.Nice); err != nil {
			return fmt.Errorf("priority: %w", err)
		}
	}
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0); err != nil {
		return fmt.Errorf("OOM score: %w", err)
	}
	return nil
}

// kernelAtLeast reports whether the running kernel is major.minor or newer.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(parts[0])
	mi, _ := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return ma > major || (ma == major && mi >= minor)
}
