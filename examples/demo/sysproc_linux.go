package main

import "syscall"

// sysProcAttr puts each service in a process group of its own, so a Ctrl-C
// in the terminal reaches only the demo, which stops them in order; and
// asks the kernel to send it SIGTERM if the demo dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
