//go:build !amd64

package power

// HostTSCkHz is 0 where the host has no x86 TSC.
func HostTSCkHz() uint64 { return 0 }
