package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/bench/internal/nsnet"
)

var (
	errExited  = errors.New("bench: process exited")
	errTimeout = errors.New("bench: timed out waiting for an event")
	errRole    = errors.New("bench: role reported an error")
)

// impl is one of the things compared.
type impl string

const (
	implWarren impl = "warren"
	implCote   impl = "cote"
	implRaw    impl = "raw"
	// implHandoff is raw TCP with warren's goroutine hand-offs (the
	// handoff-server and handoff-client roles); like raw, a Go child.
	implHandoff impl = "handoff"
)

// proc is a child process running one role inside a namespace.
type proc struct {
	term    bool // stop with SIGTERM first (the child is writing profiles)
	goRole  bool // this binary, not cote: it handles SIGUSR1 (see startTraces)
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	started time.Time // just before the process was started
	events  chan event
	done    chan struct{} // closed when the process has exited

	mu     sync.Mutex
	stderr []byte // tail
	other  []string
}

// procs starts and tracks every child, so that all can be killed.
type procs struct {
	self    string // this binary, re-executed for Go roles
	coteDir string // bench/cote
	hostNS  string // the parent's network namespace
	verbose bool
	profile string // directory for Go children's profiles, or ""
	trace   string // directory for Go children's execution traces, or "" (see runRow)
	traces  string // -trace's directory, or "": trace is a directory in it for each row and round
	pin     string // pinSplit, pinSame or "" (see pinChild)

	started int // children started so far, for pinSplit

	mu   sync.Mutex
	live map[*proc]bool
}

func (ps *procs) start(host nsnet.Host, im impl, cfg roleConfig) (*proc, error) {
	cfg.Iface = host.Iface
	if im != implCote {
		cfg.Profile, cfg.Trace = ps.profile, ps.trace
	}
	if cfg.MaxLifeMS == 0 {
		cfg.MaxLifeMS = 60_000
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	argv := []string{"ip", "netns", "exec", host.NS}
	if im == implCote {
		argv = append(argv, nodeBin, filepath.Join(ps.coteDir, "roles.js"))
	} else {
		argv = append(argv, ps.self)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	env := []string{envConfig + "=" + string(js), envHostNS + "=" + ps.hostNS}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "WARREN_") || strings.HasPrefix(kv, "COTE_") || strings.HasPrefix(kv, "WBENCH_") {
			continue // every setting is explicit
		}
		env = append(env, kv)
	}
	if im == implCote {
		env = append(env, "COTE_ENV="+cfg.Env, "COTE_LOG=false", "COTE_LOG_UNKNOWN_EVENTS=false")
	} else {
		env = append(env, envRole+"=1")
	}
	cmd.Env = env
	cmd.Dir = ps.coteDir
	p := &proc{
		goRole: im != implCote,
		term:   cfg.Profile != "",
		name:   fmt.Sprintf("%s %s", im, cfg.Role),
		cmd:    cmd,
		events: make(chan event, 64),
		done:   make(chan struct{}),
	}
	if cfg.Mode != "" {
		p.name += " " + cfg.Mode
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	cmd.Stderr = (*stderrTail)(p)
	cmd.WaitDelay = time.Second
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", p.name, err)
	}
	ps.mu.Lock()
	ps.live[p] = true
	k := ps.started
	ps.started++
	ps.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			var e event
			if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
				p.mu.Lock()
				if len(p.other) < 50 {
					p.other = append(p.other, string(line))
				}
				p.mu.Unlock()
				continue
			}
			if ps.verbose {
				fmt.Fprintf(os.Stderr, "  [%s pid %d] %s\n", p.name, p.pid(), line)
			}
			select {
			case p.events <- e:
			default: // nobody listens for this many events: drop
			}
		}
		_ = cmd.Wait()
		close(p.done)
		ps.mu.Lock()
		delete(ps.live, p)
		ps.mu.Unlock()
	}()
	// The child is still ip(8), one thread, until it executes the role:
	// every thread of the role inherits the placement set here.
	if err := ps.pinChild(p.pid(), k); err != nil {
		p.sigkill()
		return nil, fmt.Errorf("pinning %s: %w", p.name, err)
	}
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// await returns the next event named ev; an "error" event, the process's exit
// or the timeout end the wait with an error.
func (p *proc) await(ctx context.Context, ev string, timeout time.Duration) (event, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case e := <-p.events:
			switch e.Ev {
			case ev:
				return e, nil
			case "error":
				return e, fmt.Errorf("%w: %s: %s", errRole, p.name, e.Msg)
			}
		case <-p.done:
			// Events printed just before exiting are still queued.
			select {
			case e := <-p.events:
				if e.Ev == ev {
					return e, nil
				}
				if e.Ev == "error" {
					return e, fmt.Errorf("%w: %s: %s", errRole, p.name, e.Msg)
				}
				continue
			default:
			}
			return event{}, fmt.Errorf("%w: %s before %q (%s)%s", errExited, p.name, ev, p.cmd.ProcessState, p.tail())
		case <-t.C:
			return event{}, fmt.Errorf("%w: %s: no %q within %v%s", errTimeout, p.name, ev, timeout, p.tail())
		case <-ctx.Done():
			return event{}, ctx.Err()
		}
	}
}

// send writes a command line to the child's stdin.
func (p *proc) send(word string) error {
	_, err := io.WriteString(p.stdin, word+"\n")
	return err
}

// kill stops the process (SIGTERM first when it writes profiles, then
// SIGKILL to its group) and waits (bounded) for the exit.
func (p *proc) kill() {
	if p.term {
		_ = syscall.Kill(p.pid(), syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(3 * time.Second):
		}
	}
	p.sigkill()
}

// sigkill SIGKILLs the process group and waits (bounded) for the exit.
func (p *proc) sigkill() {
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// rss reads the resident set size of the process (VmRSS) in bytes.
func (p *proc) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("bench: no VmRSS in /proc status")
}

// cpu reads the CPU time (user + system, all threads) the process has used.
func (p *proc) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		select {
		case <-p.done: // exited (and reaped just now): its final figure
			if st := p.cmd.ProcessState; st != nil {
				return st.UserTime() + st.SystemTime(), nil
			}
		case <-time.After(time.Second):
		}
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14 and stime 15.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, errors.New("bench: cannot parse /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bench: cannot parse /proc stat times")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc times: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// cpuOf sums the CPU time of several processes.
func cpuOf(ps []*proc) (time.Duration, error) {
	var sum time.Duration
	for _, p := range ps {
		c, err := p.cpu()
		if err != nil {
			return 0, err
		}
		sum += c
	}
	return sum, nil
}

func (p *proc) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	if len(p.other) > 0 {
		b.WriteString("\n    stdout: " + strings.Join(p.other, "\n    stdout: "))
	}
	if s := strings.TrimSpace(string(p.stderr)); s != "" {
		b.WriteString("\n    stderr: " + strings.ReplaceAll(s, "\n", "\n    stderr: "))
	}
	return b.String()
}

type stderrTail proc

func (t *stderrTail) Write(b []byte) (int, error) {
	p := (*proc)(t)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stderr = append(p.stderr, b...)
	if n := len(p.stderr); n > 8<<10 {
		p.stderr = p.stderr[n-8<<10:]
	}
	return len(b), nil
}

// killAll kills every child still running.
func (ps *procs) killAll() {
	ps.mu.Lock()
	var all []*proc
	for p := range ps.live {
		all = append(all, p)
	}
	ps.mu.Unlock()
	for _, p := range all {
		p.kill()
	}
	// Wait for them to be reaped, so the next scenario starts alone (and
	// its CPU figures count only its own processes).
	for _, p := range all {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
}

// wait gives the process d to exit by itself, then kills it.
func (p *proc) wait(d time.Duration) {
	select {
	case <-p.done:
	case <-time.After(d):
		p.kill()
	}
}

// startTraces has every Go child running now start its execution trace
// (see -trace): SIGUSR1, which a Go role handles only when cfg.Trace is
// set.
func (ps *procs) startTraces() {
	for _, p := range ps.all() {
		if p.goRole {
			_ = syscall.Kill(p.pid(), syscall.SIGUSR1)
		}
	}
}

// all returns the children running now.
func (ps *procs) all() []*proc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := make([]*proc, 0, len(ps.live))
	for p := range ps.live {
		out = append(out, p)
	}
	return out
}
