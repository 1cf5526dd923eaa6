package protocol

// The kernel command-line parameters a worker reads at boot are defined in
// package bootparams.

// ProbeMarker is printed on the console by a worker booted with mf.probe=1.
const ProbeMarker = "MFINIT-PROBE-OK"

// InitMarker starts the line a worker's /init prints on the console as it
// starts ("MFINIT-START uptime_ms=N"): the host times the boot by it.
const InitMarker = "MFINIT-START"
