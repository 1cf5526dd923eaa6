package protocol

// Kernel command-line parameters a worker reads at boot (docs/protocol.md).
// The orchestrator's power controllers and mfbuild write them; the worker
// runtime parses them. The network itself is set by the kernel's ip=.
const (
	ParamID       = "mf.id"       // worker id, as in the cluster file
	ParamOrch     = "mf.orch"     // orchestrator host:port
	ParamSecret   = "mf.secret"   // the cluster's shared secret, hex
	ParamOff      = "mf.off"      // how to power off: "poweroff" (default) or "reboot" (QEMU -no-reboot)
	ParamFailsafe = "mf.failsafe" // seconds without a word from the orchestrator before powering off
	ParamIface    = "mf.iface"    // network interface to wait for (default eth0)
	ParamProbe    = "mf.probe"    // 1: print ProbeMarker and power off (accelerator probe)
)

// ProbeMarker is printed on the console by a worker booted with mf.probe=1.
const ProbeMarker = "MFINIT-PROBE-OK"

// InitMarker starts the line a worker's /init prints on the console as it
// starts ("MFINIT-START uptime_ms=N"): the host times the boot by it.
const InitMarker = "MFINIT-START"
