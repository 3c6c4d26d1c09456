package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Placements of -pin. The kernel decides where a process runs, and on a
// machine with few cores that decides much of a ping-pong's speed (row 1a):
// two processes on one core hand the work to each other without waking
// another core; on two cores each wake-up crosses them. -pin fixes the
// placement the same way for every implementation, to tell that apart from
// the work each does. A Go child pinned to one core runs with GOMAXPROCS=1,
// since the runtime counts the cores it may use (rows 1d and 1e set that
// alone, unpinned), unless GOMAXPROCS is set in the benchmark's environment:
// the children inherit it, and keep that many Ps on their one core.
const (
	pinSplit = "split" // the k-th child started runs on the k-th core this process may use, in turn
	pinSame  = "same"  // every child runs on the last core this process may use
)

// pinChild sets the CPU affinity of the child pid, the k-th started, per
// ps.pin. It runs right after the start, while the child is still ip(8) with
// one thread: the threads the role starts later inherit the set.
func (ps *procs) pinChild(pid, k int) error {
	if ps.pin == "" {
		return nil
	}
	cpus, err := allowedCPUs()
	if err != nil {
		return err
	}
	cpu := cpus[len(cpus)-1]
	if ps.pin == pinSplit {
		cpu = cpus[k%len(cpus)]
	}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(pid, &set); err != nil {
		return fmt.Errorf("sched_setaffinity(%d, cpu %d): %w", pid, cpu, err)
	}
	// Should the child have started the role already, its threads are
	// pinned one by one, until a listing shows none that is not (a thread
	// made meanwhile by one not yet pinned is in the next listing).
	done := map[int]bool{pid: true}
	for round := 0; round < 100; round++ {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return nil // exited: its start reports why
		}
		fresh := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			fresh, done[tid] = true, true
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("sched_setaffinity(%d, cpu %d): %w", tid, cpu, err)
			}
		}
		if !fresh {
			return nil
		}
	}
	return fmt.Errorf("process %d kept starting threads while being pinned", pid)
}

// allowedCPUs lists the cores this process may run on, in order.
func allowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	var cpus []int
	for c := 0; c < len(set)*64 && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return nil, errors.New("sched_getaffinity: no core")
	}
	return cpus, nil
}
