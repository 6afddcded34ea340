package kafkatest

import "syscall"

// sysProcAttr puts a broker in its own process group, so that stopping it signals the
// JVM and anything it spawned. An attached broker also gets SIGKILL when the process that
// started it dies, so a crashed or interrupted test binary leaves no JVM behind (the
// signal is tied to the starting thread; the Go runtime does not retire threads unless a
// goroutine locked to one exits, which the harness never does). A detached one gets a
// session of its own instead, so that it outlives `kafkalocal up` and its terminal.
func sysProcAttr(detach bool) *syscall.SysProcAttr {
	if detach {
		return &syscall.SysProcAttr{Setsid: true}
	}
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
