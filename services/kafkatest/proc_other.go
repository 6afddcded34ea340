//go:build unix && !linux

package kafkatest

import "syscall"

// sysProcAttr puts a broker in its own process group (or session, when detached) so that
// stopping it signals the whole group. Outside Linux there is no parent-death signal:
// brokers of a test binary that dies are left to Stop or to `kafkalocal down`.
func sysProcAttr(detach bool) *syscall.SysProcAttr {
	if detach {
		return &syscall.SysProcAttr{Setsid: true}
	}
	return &syscall.SysProcAttr{Setpgid: true}
}
