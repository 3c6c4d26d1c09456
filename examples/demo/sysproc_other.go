//go:build !unix

package main

import "syscall"

// sysProcAttr: no process groups here; Ctrl-C reaches the services too and
// they shut down on their own.
func sysProcAttr() *syscall.SysProcAttr { return nil }
