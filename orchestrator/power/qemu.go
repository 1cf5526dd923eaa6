package power

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microfaas/microfaas/bootparams"
	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/target"
)

// QEMUConfig says how to boot QEMU workers. The same settings serve the
// orchestrator, the smoke test and the benchmarks: there is one way to boot
// a worker.
type QEMUConfig struct {
	Arch   *target.Target // nil: target.X86
	Kernel string         // bzImage / zImage (a PVH vmlinux beside it boots instead: BootKernel)
	Initrd string         // initramfs cpio; empty when built into the kernel (Arch.InitramfsLinked)
	// Accel is "kvm", "tcg" or "auto" (probe KVM with a short real boot and
	// fall back to TCG when it fails or hangs).
	Accel string
	// Cluster supplies the network, the orchestrator address and the secret.
	Cluster *cluster.Cluster
	// LogDir receives each worker's console output (worker-<id>.log).
	LogDir string
	// Failsafe is the worker's mf.failsafe, in seconds (0: the worker's default).
	Failsafe int
	// Cmdline holds kernel parameters added to every worker's command line
	// (not mf.* or ip=, which have their own fields: bootparams.ValidKernel).
	Cmdline string
	// Console, if set, is called just before a worker's qemu starts and
	// gets a copy of its console output (benchmarks time the first byte).
	Console func(id string) io.Writer
	// Boot is how a worker starts: BootFull ("" too) boots the kernel and
	// initramfs; BootSnapshot restores a VM saved once at the point where
	// it waits for its identity (snapshot.go; x86 only).
	Boot string
	// SnapshotDir holds the saved VMs of snapshot boots, by cache key
	// (default: the user cache folder's microfaas/snapshots).
	SnapshotDir string
	// Relay is the program QEMU runs per forwarded connection of a worker
	// on user networking (netfwd.go). Empty: RelayBinary's choice.
	Relay string
	Log   *slog.Logger
}

// QEMU is the power controller for VM workers: one qemu process per worker,
// reaped when it exits and killed if the orchestrator dies.
type QEMU struct {
	cfg   QEMUConfig
	accel string
	mu    sync.Mutex
	procs map[string]*exec.Cmd
	// starting holds the workers whose qemu is being prepared (PowerOn),
	// with the function that cancels their start (PowerOff, Close).
	starting map[string]context.CancelFunc
	exited   map[*exec.Cmd]chan struct{} // closed once the process is reaped and OnExit's handler ran
	onExit   func(string, error)
	// plainNet (benchmarks only) gives workers the user networking of
	// before issue 18, unrestricted and without relays, to measure what
	// the restriction costs.
	plainNet bool
	// relayPort (benchmarks only) keeps workers on the worker port
	// through the relay even where they could use their virtio-serial
	// port (sessionport.go), to measure what the port saves.
	relayPort bool
	// onSession takes the sessions that arrive over workers' ports
	// (OnSession; nil: none, workers use the worker port).
	onSession func(workerID string, c net.Conn)
	// noPorts: the worker kernel has no virtio-serial driver (built
	// before the session port): its workers use the worker port.
	noPorts bool
	// keyDir (owner-only) holds each boot's initramfs with the worker's
	// key (BootInitrd), removed when its VM exits, and QMP sockets.
	keyDir string
	snap   snapshots // snapshot boots (snapshot.go)
}

// NewQEMU checks the configuration and resolves the accelerator.
func NewQEMU(ctx context.Context, cfg QEMUConfig) (*QEMU, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Arch == nil {
		cfg.Arch = target.X86
	}
	for _, f := range []string{cfg.Kernel, cfg.Initrd} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("qemu worker image: %w (build it with mfbuild)", err)
		}
	}
	cfg.Kernel = BootKernel(cfg.Arch, cfg.Kernel, cfg.Log) // vmlinux beside a bzImage: see kernel.go
	if _, err := exec.LookPath(cfg.Arch.QEMU.Binary); err != nil {
		return nil, fmt.Errorf("%s not found: install QEMU (make deps): %w", cfg.Arch.QEMU.Binary, err)
	}
	if cfg.LogDir == "" {
		cfg.LogDir = os.TempDir()
	}
	if err := os.MkdirAll(cfg.LogDir, 0o700); err != nil {
		return nil, err
	}
	if cfg.Cluster != nil {
		for _, w := range cfg.Cluster.Workers {
			if !w.UsesUserNet() || w.VM.Target() != cfg.Arch {
				continue
			}
			if _, far := forwards(cfg.Cluster, w, false); len(far) > 0 {
				cfg.Log.Warn("QEMU workers on user networking reach only this host, at the orchestrator's address inside 10.0.2.0/24 (10.0.2.2): endpoints elsewhere are unreachable for them (run the service here and name it "+
					"10.0.2.2:PORT, set network.orchestrator to 10.0.2.2, or give the VMs tap networking)", "endpoints", far)
			}
			break
		}
	}
	keyDir, err := os.MkdirTemp("", "mf-boot-keys-")
	if err != nil {
		return nil, fmt.Errorf("qemu boot key directory: %w", err)
	}
	q := &QEMU{cfg: cfg, procs: map[string]*exec.Cmd{}, starting: map[string]context.CancelFunc{},
		exited: map[*exec.Cmd]chan struct{}{}, keyDir: keyDir}
	q.snap.used = map[string]time.Time{}
	if cfg.Arch.QEMU.SessionPort && kernelLacksPorts(cfg.Kernel) {
		q.noPorts = true
		cfg.Log.Warn("the worker kernel has no virtio-serial driver (CONFIG_VIRTIO_CONSOLE): its workers reach mforch through the slower relay; rebuild it with mfbuild",
			"kernel", cfg.Kernel)
	}
	if err := q.checkSnapshotConfig(); err != nil {
		os.RemoveAll(keyDir)
		return nil, err
	}
	switch cfg.Accel {
	case "kvm", "tcg":
		q.accel = cfg.Accel
	case "", "auto":
		q.accel = ProbeAccel(ctx, cfg.Arch, cfg.Kernel, cfg.Initrd, cfg.Log)
	default:
		return nil, fmt.Errorf("qemu accel %q: want kvm, tcg or auto", cfg.Accel)
	}
	return q, nil
}

// Accel is the accelerator in use.
func (q *QEMU) Accel() string { return q.accel }

// OnExit registers the handler called when a worker's qemu exits.
func (q *QEMU) OnExit(fn func(string, error)) {
	q.mu.Lock()
	q.onExit = fn
	q.mu.Unlock()
}

// Args returns the qemu command line for a worker booted with cmdline
// (a worker on its session port gets the port's socket as fd 3).
func (q *QEMU) Args(w cluster.Worker, cmdline string) []string {
	port := ""
	if q.viaPort(w) {
		port = socketBackend(3)
	}
	return qemuArgs(q.cfg.Arch, q.accel, q.cfg.Kernel, q.cfg.Initrd, w, cmdline, q.netdev(w), port)
}

// netdev is worker w's -netdev: its tap device, or user networking that
// reaches only the cluster's services and, for a worker not on its
// session port, the worker port (netfwd.go).
func (q *QEMU) netdev(w cluster.Worker) string {
	if w.VM.Net == "tap" {
		return ""
	}
	if q.plainNet {
		return "user,id=n0"
	}
	exe := q.cfg.Relay
	if exe == "" {
		exe = RelayBinary()
	}
	fwds, _ := forwards(q.cfg.Cluster, w, q.viaPort(w))
	return userNetdev(exe, filepath.Join(q.keyDir, "relays-"+w.ID), fwds)
}

// qemuArgs is the qemu command line; netdev "" is the worker's network
// without any guestfwd rule (the probe, a snapshot's saved VM); port, if
// set, is the chardev backend of the worker's session port
// (sessionport.go).
func qemuArgs(t *target.Target, accel, kernel, initrd string, w cluster.Worker, cmdline, netdev, port string) []string {
	args := []string{"-M", t.QEMU.Machine, "-cpu", t.QEMU.CPUFor(accel)}
	for _, d := range t.QEMU.Devices {
		args = append(args, "-device", d)
	}
	if port != "" {
		args = append(args, portArgs(port)...)
	}
	args = append(args, "-accel", accel,
		"-m", fmt.Sprint(w.VM.Memory()), "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "stdio", "-kernel", kernel)
	if initrd != "" {
		args = append(args, "-initrd", initrd)
	}
	dev := "virtio-net-device"
	switch {
	case w.VM.Net == "tap":
		netdev = "tap,id=n0,ifname=" + w.VM.Tap + ",script=no,downscript=no"
	case netdev == "":
		netdev = userNetdev("", "", nil)
	}
	mac := ""
	if w.MAC != "" {
		mac = ",mac=" + w.MAC
	}
	args = append(args, "-netdev", netdev, "-device", dev+",netdev=n0"+mac, "-append", cmdline)
	return args
}

// Cmdline is the kernel command line for worker w: console, reset-on-panic,
// the kernel's own IP configuration, and the worker's mf.* parameters.
func (q *QEMU) Cmdline(w cluster.Worker) (string, error) {
	return q.cmdline(w, false)
}

// cmdline renders worker w's command line; for a snapshot boot
// (snapshot) without anything that names the worker or the orchestrator's
// port: mf.id and mf.orch are left out (they come with the identity after
// the restore) and ip='s hostname is generic.
func (q *QEMU) cmdline(w cluster.Worker, snapshot bool) (string, error) {
	p, err := q.cfg.Cluster.BootParams(w)
	if err != nil {
		return "", err
	}
	if q.viaPort(w) {
		p.Orch = portOrch
	}
	if snapshot {
		p.ID, p.Orch, p.Snapshot = "", "", true
		if p.Net != nil {
			n := *p.Net
			n.Hostname = snapshotHostname
			p.Net = &n
		}
	}
	p.Kernel = []string{
		"console=" + q.cfg.Arch.QEMU.Console, "reboot=t", "panic=-1", "quiet", "random.trust_cpu=on",
		// No legacy BSD PTYs (nothing on a worker uses them): their 256
		// device pairs were the slowest initcall under TCG (docs/performance.md).
		"pty.legacy_count=0",
		// The VM's TSC is steady; trusting it gives fine-grained time from the
		// start instead of jiffies until the TSC watchdog settles.
		"tsc=reliable",
	}
	if q.cfg.Arch.QEMU.TSC && q.accel == "tcg" {
		if khz := HostTSCkHz(); khz > 0 {
			p.Kernel = append(p.Kernel, fmt.Sprintf("tsc_early_khz=%d", khz))
		}
		// The local APIC timer has no TSC-deadline mode under TCG, so the
		// kernel would calibrate it and then verify the result, each over
		// HZ/10 jiffies: ~220 ms of every boot (apic=verbose shows it). The
		// PIT serves as the clock event device instead: power-on to
		// connected 968 -> 768 ms (docs/performance.md).
		p.Kernel = append(p.Kernel, "nolapic_timer")
	}
	p.Kernel = append(p.Kernel, strings.Fields(q.cfg.Cmdline)...)
	// The microvm has no power-off device: the worker resets instead, and
	// -no-reboot turns the reset into qemu exiting. A reboot the
	// orchestrator asks for (CmdReboot) ends the same way: it powers the
	// worker on again when the exit is reported (machine.go, exited).
	p.Off = bootparams.Reboot
	p.Failsafe = time.Duration(q.cfg.Failsafe) * time.Second
	s, err := p.Render()
	if err != nil {
		return "", fmt.Errorf("worker %s: %w", w.ID, err)
	}
	return s, nil
}

// LogPath is where worker id's console output goes.
func (q *QEMU) LogPath(id string) string {
	return filepath.Join(q.cfg.LogDir, "worker-"+id+".log")
}

// PowerOn starts the worker's qemu process.
func (q *QEMU) PowerOn(ctx context.Context, w cluster.Worker) error {
	return q.powerOn(ctx, w, nil)
}

// PowerOnBundle starts the worker's qemu process with b in its boot
// initramfs (BootInitrd). A snapshot boot restores a saved VM, which
// cannot take a file: its worker fetches the bundle over the protocol.
func (q *QEMU) PowerOnBundle(ctx context.Context, w cluster.Worker, b BootBundle) error {
	return q.powerOn(ctx, w, []BootBundle{b})
}

func (q *QEMU) powerOn(ctx context.Context, w cluster.Worker, bundles []BootBundle) error {
	cmdline, err := q.Cmdline(w)
	if err != nil {
		return err
	}
	// Reserve the worker while its qemu is prepared (a snapshot boot may
	// first have to save one: seconds), so a second PowerOn is refused and
	// a PowerOff in between cancels the start instead of missing it.
	q.mu.Lock()
	if _, running := q.procs[w.ID]; running || q.starting[w.ID] != nil {
		q.mu.Unlock()
		return fmt.Errorf("worker %s: already powered on", w.ID)
	}
	ctx, cancel := context.WithCancel(ctx)
	q.starting[w.ID] = cancel
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.starting, w.ID)
		q.mu.Unlock()
		cancel()
	}()
	// Owner-only: a console shows what the worker logs of its jobs.
	logf, err := os.OpenFile(q.LogPath(w.ID), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("worker %s console log: %w", w.ID, err)
	}
	// The worker's own key travels in a per-boot initramfs archive (full
	// boots) or on the console after the restore (snapshot boots), never
	// on the command line (docs/protocol.md).
	key, err := protocol.WorkerKey(q.cfg.Cluster.SecretBytes(), w.ID)
	if err != nil {
		logf.Close()
		return fmt.Errorf("worker %s: %w", w.ID, err)
	}
	// The session port's channel (sessionport.go): qemu's end is
	// inherited as its last extra file, the other is the orchestrator's.
	var qemuEnd *os.File
	var session net.Conn
	onSession := q.session()
	if q.viaPort(w) {
		if qemuEnd, session, err = sessionPair(w.ID); err != nil {
			logf.Close()
			return fmt.Errorf("worker %s: %w", w.ID, err)
		}
	}
	var cmd *exec.Cmd
	var initrd string  // the per-boot initramfs, removed when qemu exits
	var r *restoration // a snapshot boot's restore
	if q.cfg.Boot == BootSnapshot {
		if len(bundles) > 0 {
			q.cfg.Log.Debug("snapshot boot: the worker fetches its bundle over the protocol", "worker", w.ID)
		}
		r, err = q.restoreCmd(ctx, w, key, qemuEnd)
		if r != nil {
			cmd = r.cmd
		}
	} else {
		initrd, err = BootInitrd(q.keyDir, q.cfg.Initrd, w.ID, key, bundles...)
		port := ""
		if qemuEnd != nil {
			port = socketBackend(3)
		}
		// Not CommandContext: the VM outlives the request that started it.
		cmd = exec.Command(q.cfg.Arch.QEMU.Binary, qemuArgs(q.cfg.Arch, q.accel, q.cfg.Kernel, initrd, w, cmdline, q.netdev(w), port)...)
		if qemuEnd != nil {
			cmd.ExtraFiles = []*os.File{qemuEnd}
		}
	}
	if err != nil {
		logf.Close()
		if qemuEnd != nil {
			qemuEnd.Close()
			session.Close()
		}
		return fmt.Errorf("worker %s: %w", w.ID, err)
	}
	cleanup := func() {
		logf.Close()
		if initrd != "" {
			os.Remove(initrd)
		}
		if r != nil {
			r.close()
		}
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if q.cfg.Console != nil {
		cmd.Stdout = io.MultiWriter(logf, q.cfg.Console(w.ID))
	}
	// The kernel kills the VM if the orchestrator dies, so no qemu is left behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	err = cmd.Start()
	if qemuEnd != nil {
		qemuEnd.Close() // qemu's now (or nobody's)
	}
	if err != nil {
		cleanup()
		if session != nil {
			session.Close()
		}
		return fmt.Errorf("worker %s: start qemu: %w", w.ID, err)
	}
	if r != nil {
		r.started()
	}
	exited := make(chan struct{})
	q.mu.Lock()
	if ctx.Err() != nil {
		// Powered off (or the orchestrator gave up) while starting: the VM
		// never counts as on, and no exit is reported for it.
		q.mu.Unlock()
		cmd.Process.Kill()
		cmd.Wait()
		cleanup()
		if session != nil {
			session.Close()
		}
		return fmt.Errorf("worker %s: powered off while starting: %w", w.ID, ctx.Err())
	}
	q.procs[w.ID] = cmd
	q.exited[cmd] = exited
	q.mu.Unlock()
	q.cfg.Log.Debug("qemu started", "worker", w.ID, "pid", cmd.Process.Pid, "accel", q.accel, "session_port", session != nil)
	if session != nil {
		// The handshake starts now and waits for the guest to open the
		// port; it ends with qemu (the channel's other end closes).
		onSession(w.ID, session)
	}
	// Tied to this qemu: cancelled when it exits.
	life, endLife := context.WithCancelCause(context.Background())
	if r != nil {
		// Resume the restored VM and give it its identity; a worker that
		// cannot get it is no worker: pull the plug (OnExit reports it).
		go func() {
			err := r.restore(life)
			switch {
			case err == nil:
			case life.Err() != nil:
				q.cfg.Log.Warn("worker exited during its restore", "worker", w.ID, "err", context.Cause(life))
			default:
				q.cfg.Log.Error("snapshot restore failed; powering the worker off", "worker", w.ID, "err", err)
				cmd.Process.Kill()
			}
		}()
	}
	go func() {
		err := cmd.Wait()
		endLife(&qemuExit{self: cmd.ProcessState != nil && cmd.ProcessState.Exited(), err: err})
		cleanup()
		q.mu.Lock()
		if q.procs[w.ID] == cmd {
			delete(q.procs, w.ID)
		}
		fn := q.onExit
		q.mu.Unlock()
		q.cfg.Log.Debug("qemu exited", "worker", w.ID, "err", err)
		if fn != nil {
			fn(w.ID, err)
		}
		q.mu.Lock()
		delete(q.exited, cmd)
		q.mu.Unlock()
		close(exited)
	}()
	return nil
}

// qemuExit ends a qemu's life context: self is true when qemu exited on its
// own (an exit status), false when it was killed by a signal.
type qemuExit struct {
	self bool
	err  error
}

func (e *qemuExit) Error() string { return fmt.Sprintf("qemu exited: %v", e.err) }

// PowerOff kills the worker's qemu process (pulling the plug) and waits for
// it to be reaped and its exit reported (so the report never arrives after
// PowerOff returned).
func (q *QEMU) PowerOff(ctx context.Context, w cluster.Worker) error {
	q.mu.Lock()
	if cancel := q.starting[w.ID]; cancel != nil {
		cancel() // PowerOn kills what it started and reports no exit
	}
	cmd, ok := q.procs[w.ID]
	exited := q.exited[cmd]
	q.mu.Unlock()
	if !ok {
		return nil
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("worker %s: kill qemu: %w", w.ID, err)
	}
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Running reports whether worker id's qemu process is alive.
func (q *QEMU) Running(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.procs[id]
	return ok
}

// PIDs returns the process id of every running worker's qemu, by worker
// id (for the CPU-time energy model, which reads /proc/PID/stat).
func (q *QEMU) PIDs() map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[string]int, len(q.procs))
	for id, cmd := range q.procs {
		out[id] = cmd.Process.Pid
	}
	return out
}

// Close kills every worker.
func (q *QEMU) Close() {
	q.mu.Lock()
	for _, cancel := range q.starting {
		cancel()
	}
	ids := make([]string, 0, len(q.procs))
	for id := range q.procs {
		ids = append(ids, id)
	}
	q.mu.Unlock()
	for _, id := range ids {
		q.PowerOff(context.Background(), cluster.Worker{ID: id})
	}
	os.RemoveAll(q.keyDir)
}

var (
	probeMu    sync.Mutex
	probeCache = map[string]string{}
)

// ProbeAccel boots the worker kernel under KVM with mf.probe=1 and a short
// timeout. If the worker's probe marker appears, KVM works; otherwise (no
// /dev/kvm, an error, or a nested-KVM hang) it returns "tcg". The answer is
// remembered for the process.
func ProbeAccel(ctx context.Context, t *target.Target, kernel, initrd string, log *slog.Logger) string {
	if !t.QEMU.KVM {
		return "tcg"
	}
	key := kernel + "\x00" + initrd
	probeMu.Lock()
	defer probeMu.Unlock()
	if a, ok := probeCache[key]; ok {
		return a
	}
	accel := "tcg"
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		pctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		cmdline, _ := bootparams.Params{Kernel: []string{"console=" + t.QEMU.Console, "reboot=t", "panic=-1"},
			Probe: true, Off: bootparams.Reboot}.Render()
		args := qemuArgs(t, "kvm", kernel, initrd, cluster.Worker{ID: "probe"}, cmdline, "", "")
		cmd := exec.CommandContext(pctx, t.QEMU.Binary, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, io.Discard
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		err := cmd.Run()
		cancel()
		if bytes.Contains(out.Bytes(), []byte(protocol.ProbeMarker)) {
			accel = "kvm"
		} else {
			log.Info("KVM probe boot failed; using TCG", "err", err)
		}
	}
	probeCache[key] = accel
	return accel
}
