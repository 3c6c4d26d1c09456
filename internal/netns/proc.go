//go:build linux

package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	// ErrTimeout is returned by Proc.Await when no matching line came in time.
	ErrTimeout = errors.New("netns: timed out waiting for a line")
	// ErrExited is returned by Proc.Await when the process ended before a
	// matching line.
	ErrExited = errors.New("netns: process exited")
)

const (
	maxLines     = 100_000   // stdout lines kept per process; older ones are dropped
	maxStderr    = 256 << 10 // bytes of stderr kept (the tail); room for a goroutine dump
	maxRace      = 32 << 10  // bytes of a race detector report kept
	dumpLines    = 40        // stdout lines shown when a test fails
	defaultGrace = 3 * time.Second
	// EnvVerbose, when set, makes every Proc print its output at cleanup even
	// when the test passed.
	EnvVerbose = "WARREN_NETNS_VERBOSE"
)

// raceMarker starts every report of the race detector.
var raceMarker = []byte("WARNING: DATA RACE")

// Proc is a started child process whose stdout is split into lines that a
// test can wait for, and whose stderr is kept (its tail) for failure
// reports. Create it with StartProc.
type Proc struct {
	name string
	cmd  *exec.Cmd

	mu      sync.Mutex
	lines   []string
	dropped int // lines dropped from the front of lines (maxLines)
	partial []byte
	next    int           // absolute index of the first line Await has not consumed
	changed chan struct{} // closed and replaced on every new line and on exit
	stderr  []byte
	race    []byte // the first race detector report in stderr (its start, up to maxRace bytes)
	errOut  error  // Wait's result, valid once done is closed

	done chan struct{}
}

// StartProc starts cmd (typically from Host.Command) and registers cleanup
// that stops it (SIGTERM, then SIGKILL after 3 s) and, when the test failed
// (or WARREN_NETNS_VERBOSE is set), logs its exit status, the last stdout
// lines and the tail of stderr. name labels the process in reports. cmd's
// Stdout and Stderr must be unset.
func StartProc(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	if cmd.Stdout != nil || cmd.Stderr != nil {
		t.Fatalf("netns: StartProc %s: cmd.Stdout and cmd.Stderr must be nil", name)
	}
	p := &Proc{name: name, cmd: cmd, changed: make(chan struct{}), done: make(chan struct{})}
	cmd.Stdout = (*procStdout)(p)
	cmd.Stderr = (*procStderr)(p)
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = 2 * time.Second
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("netns: starting %s (%s): %v", name, strings.Join(cmd.Args, " "), err)
	}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		if len(p.partial) > 0 {
			p.addLineLocked(string(p.partial))
			p.partial = nil
		}
		p.errOut = err
		close(p.done)
		p.notifyLocked()
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		err := p.Stop(defaultGrace)
		if race := p.Race(); race != "" {
			// A child killed by the test never exits with the race
			// detector's status: its report is the only trace.
			t.Errorf("netns: %s: the race detector reported a data race:\n%s", name, race)
		}
		if t.Failed() || os.Getenv(EnvVerbose) != "" {
			t.Logf("%s", p.Report(err))
		}
	})
	return p
}

// Name returns the label given to StartProc.
func (p *Proc) Name() string { return p.name }

// Pid returns the process ID (also its process group ID when started with
// Host.Command).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and its output is collected.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns the process's exit error once Done is closed (nil for exit
// status 0), and nil before.
func (p *Proc) Err() error {
	select {
	case <-p.done:
		return p.errOut
	default:
		return nil
	}
}

// Lines returns a copy of the stdout lines kept so far.
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Race returns the start of the first data race report that the race
// detector (a child built with -race) wrote to stderr, or "" if none.
func (p *Proc) Race() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.race)
}

// Stderr returns the tail of the process's stderr.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.stderr)
}

// Await waits until a stdout line not yet consumed by an earlier Await or
// WaitLine satisfies match, and returns it. Lines looked at are consumed. It
// returns ErrTimeout or ErrExited (wrapped) when no line matches in time or
// the process ends first. It is safe to call from any goroutine, but one
// waiter at a time per Proc.
func (p *Proc) Await(timeout time.Duration, match func(line string) bool) (string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		start := max(p.next, p.dropped)
		pending := append([]string(nil), p.lines[start-p.dropped:]...)
		p.next = start + len(pending)
		changed := p.changed
		exited := false
		select {
		case <-p.done:
			exited = true // every line has been collected before done closes
		default:
		}
		p.mu.Unlock()
		for i, l := range pending {
			if match(l) {
				p.mu.Lock()
				p.next = start + i + 1 // later lines stay for the next Await
				p.mu.Unlock()
				return l, nil
			}
		}
		if exited {
			return "", fmt.Errorf("%w: %s: %v", ErrExited, p.name, p.errOut)
		}
		select {
		case <-changed:
		case <-timer.C:
			return "", fmt.Errorf("%w: %s: after %v", ErrTimeout, p.name, timeout)
		}
	}
}

// WaitLine is Await that fails the test (t.Fatal, so call it from the test's
// goroutine) with the process's output when no line matches in time.
func (p *Proc) WaitLine(t testing.TB, timeout time.Duration, match func(line string) bool) string {
	t.Helper()
	l, err := p.Await(timeout, match)
	if err != nil {
		diag := ""
		if errors.Is(err, ErrTimeout) {
			diag = p.Diagnose()
		}
		t.Fatalf("%v\n%s%s", err, diag, p.Report(p.Err()))
	}
	return l
}

// Diagnose explains a process that is still running but silent: it returns
// what the kernel says of each of its threads (name, state, where it
// sleeps, kernel stack when readable), then sends it SIGQUIT, which makes a
// Go program print every goroutine's stack to stderr and exit, and waits up
// to 5 s for it to do so (the dump then shows in Report). A process that
// has exited is left alone. Kernel details that cannot be read are omitted.
func (p *Proc) Diagnose() string {
	select {
	case <-p.done:
		return ""
	default:
	}
	pid := p.Pid()
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s (pid %d) threads, from /proc:\n", p.name, pid)
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		fmt.Fprintf(&b, "%v\n", err)
	}
	for _, task := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s/", pid, task.Name())
		comm := readTrim(dir + "comm")
		state := ""
		if st, err := os.ReadFile(dir + "status"); err == nil {
			for _, l := range strings.Split(string(st), "\n") {
				if v, ok := strings.CutPrefix(l, "State:"); ok {
					state = strings.TrimSpace(v)
				}
			}
		}
		fmt.Fprintf(&b, "tid %s %s state=%q wchan=%s\n", task.Name(), comm, state, readTrim(dir+"wchan"))
		if stack := readTrim(dir + "stack"); stack != "" {
			for _, l := range strings.Split(stack, "\n") {
				fmt.Fprintf(&b, "    %s\n", l)
			}
		}
	}
	if err := p.Signal(syscall.SIGQUIT); err != nil {
		fmt.Fprintf(&b, "SIGQUIT: %v\n", err)
		return b.String()
	}
	select {
	case <-p.done:
		b.WriteString("(sent SIGQUIT: a Go program's goroutine dump is in its stderr below)\n")
	case <-time.After(5 * time.Second):
		b.WriteString("(sent SIGQUIT: still running 5 s later)\n")
	}
	return b.String()
}

func readTrim(name string) string {
	b, err := os.ReadFile(name)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Signal sends sig to the process (not its group). Signalling a process
// that has exited is a no-op.
func (p *Proc) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Kill sends SIGKILL to the process's group and waits (up to 10 s) until
// it has exited.
func (p *Proc) Kill() error {
	p.killGroup()
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("netns: %s (pid %d) did not die after SIGKILL", p.name, p.Pid())
	}
}

// Stop ends the process: SIGTERM, then SIGKILL to its group if it has not
// exited after grace. It returns the process's exit error, nil for a clean
// exit, and is idempotent.
func (p *Proc) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.errOut
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.errOut
	case <-timer.C:
	}
	if err := p.Kill(); err != nil {
		return err
	}
	return p.errOut
}

func (p *Proc) killGroup() {
	select {
	case <-p.done:
		return // reaped: the PID may no longer be ours
	default:
	}
	pid := p.cmd.Process.Pid
	if p.cmd.SysProcAttr != nil && p.cmd.SysProcAttr.Setpgid {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return
	}
	_ = p.cmd.Process.Kill()
}

// Report formats the process's exit status (exitErr), its last stdout lines
// and the tail of its stderr, for a test log.
func (p *Proc) Report(exitErr error) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	status := "running"
	select {
	case <-p.done:
		status = "exited"
		if exitErr != nil {
			status = "exited: " + exitErr.Error()
		}
	default:
	}
	total := p.dropped + len(p.lines)
	show := p.lines[max(0, len(p.lines)-dumpLines):]
	fmt.Fprintf(&b, "--- %s (%s); stdout, last %d of %d lines:\n", p.name, status, len(show), total)
	for _, l := range show {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "--- %s stderr (tail):\n%s", p.name, p.stderr)
	return b.String()
}

func (p *Proc) addLineLocked(l string) {
	p.lines = append(p.lines, strings.TrimSuffix(l, "\r"))
	if len(p.lines) > maxLines {
		n := len(p.lines) - maxLines/2
		p.lines = append([]string(nil), p.lines[n:]...)
		p.dropped += n
	}
}

func (p *Proc) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

type procStdout Proc

func (w *procStdout) Write(b []byte) (int, error) {
	p := (*Proc)(w)
	p.mu.Lock()
	defer p.mu.Unlock()
	data := b
	added := false
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		p.addLineLocked(string(p.partial) + string(data[:i]))
		p.partial = p.partial[:0]
		data = data[i+1:]
		added = true
	}
	p.partial = append(p.partial, data...)
	if len(p.partial) > maxStderr { // an unterminated flood: cut it into a line
		p.addLineLocked(string(p.partial))
		p.partial = p.partial[:0]
		added = true
	}
	if added {
		p.notifyLocked()
	}
	return len(b), nil
}

type procStderr Proc

func (w *procStderr) Write(b []byte) (int, error) {
	p := (*Proc)(w)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case len(p.race) == 0:
		// The marker may straddle two writes: look from its length
		// before the end of what came already.
		from := max(0, len(p.stderr)-len(raceMarker)+1)
		window := append(p.stderr[from:len(p.stderr):len(p.stderr)], b...)
		if i := bytes.Index(window, raceMarker); i >= 0 {
			p.race = append([]byte(nil), window[i:min(len(window), i+maxRace)]...)
		}
	case len(p.race) < maxRace:
		p.race = append(p.race, b[:min(len(b), maxRace-len(p.race))]...)
	}
	p.stderr = append(p.stderr, b...)
	if len(p.stderr) > maxStderr {
		p.stderr = append([]byte(nil), p.stderr[len(p.stderr)-maxStderr:]...)
	}
	return len(b), nil
}
