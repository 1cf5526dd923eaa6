//go:build linux && (arm || 386)

package sandbox

import "golang.org/x/sys/unix"

// The 32-bit id system calls (the 16-bit ones have the plain names).
const sysSetresuid, sysSetresgid, sysSetgroups = unix.SYS_SETRESUID32, unix.SYS_SETRESGID32, unix.SYS_SETGROUPS32
