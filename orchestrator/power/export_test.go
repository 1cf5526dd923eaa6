package power

// The GPIO test boots a QEMU guest from the external test package; it uses
// the QEMU controller's own command line so there is still one way to boot
// the worker kernel.
var QEMUArgs = qemuArgs
