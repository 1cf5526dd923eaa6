//go:build linux && !(arm || 386)

package sandbox

import "golang.org/x/sys/unix"

const sysSetresuid, sysSetresgid, sysSetgroups = unix.SYS_SETRESUID, unix.SYS_SETRESGID, unix.SYS_SETGROUPS
