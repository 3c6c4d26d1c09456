//go:build unix && !linux

package main

import "syscall"

// sysProcAttr puts each service in a process group of its own, so a Ctrl-C
// in the terminal reaches only the demo, which stops them in order.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
