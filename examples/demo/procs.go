package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Names of the example services, as built into the demo's directory.
const (
	paymentBin    = "payment-service"
	validationBin = "validation-service"
	monitorBin    = "payment-monitor"
)

// stopTimeout bounds a graceful stop (SIGTERM) before SIGKILL.
const stopTimeout = 10 * time.Second

var (
	errNotReady = errors.New("demo: service did not become ready")
	errExited   = errors.New("demo: service exited")
)

// proc is one service process the demo started.
type proc struct {
	name    string // label in the transcript: validation-1, payment-service...
	cmd     *exec.Cmd
	logPath string
	started time.Time
	done    chan struct{} // closed when the process has exited
	err     error         // Wait's result, set before done is closed
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to shut down gracefully (SIGTERM), and kills it if it
// has not exited within stopTimeout. It returns how long the stop took.
func (p *proc) stop() (time.Duration, error) {
	start := time.Now()
	if p.exited() {
		return 0, p.err
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = p.cmd.Process.Kill() // no SIGTERM on this platform
	}
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return time.Since(start), p.err
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return time.Since(start), fmt.Errorf("%s did not stop within %s and was killed", p.name, stopTimeout)
	}
}

// readyLine matches the line a service logs once it is up, for example
// `time=... level=INFO msg=ready service=payment-service http=127.0.0.1:40123 node=... gossip=127.0.0.1:40001`.
var readyLine = regexp.MustCompile(`\bmsg=ready\b.*`)

// waitReady waits for the process's "ready" log line and returns its
// key=value fields.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(p.logPath); err == nil {
			if m := readyLine.Find(b); m != nil {
				return fields(string(m)), nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%w: %s: %v", errExited, p.name, p.err)
		case <-ctx.Done():
			if err := context.Cause(ctx); errors.Is(err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("%w: %s within %s", errNotReady, p.name, timeout)
			}
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// fields parses the key=value pairs of a slog text line (values unquoted).
func fields(line string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			out[k] = v
		}
	}
	return out
}

// procs is the set of processes the demo started.
type procs struct {
	mu  sync.Mutex
	all []*proc
}

// start runs bin with args and env, output to logDir/name.log.
func (ps *procs) start(name, bin, logDir string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("demo: start %s: %w", name, err)
	}
	p.started = time.Now()
	ps.all = append(ps.all, p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// running returns the processes that have not exited.
func (ps *procs) running() []*proc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []*proc
	for _, p := range ps.all {
		if !p.exited() {
			out = append(out, p)
		}
	}
	return out
}

// stopAll stops every running process, all at once, and waits for them.
func (ps *procs) stopAll() (int, error) {
	run := ps.running()
	errs := make([]error, len(run))
	var wg sync.WaitGroup
	for i, p := range run {
		wg.Go(func() { _, errs[i] = p.stop() })
	}
	wg.Wait()
	return len(run), errors.Join(errs...)
}

// tail writes the last n lines of every process's log to w.
func (ps *procs) tail(w io.Writer, n int) {
	ps.mu.Lock()
	all := append([]*proc(nil), ps.all...)
	ps.mu.Unlock()
	for _, p := range all {
		b, err := os.ReadFile(p.logPath)
		if err != nil {
			continue
		}
		var lines []string
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(w, "--- %s (%s), last %d lines:\n", p.name, p.logPath, len(lines))
		for _, l := range lines {
			fmt.Fprintln(w, "    "+l)
		}
	}
}

// childEnv is this process's environment without any setting the services
// read, plus extra: the services see only what the demo gives them.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "WARREN_"), k == "PORT", k == "PAYMENT_WAIT", k == "VALIDATION_DELAY":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// exeSuffix is ".exe" on Windows, where go build names binaries so.
func exeSuffix() string {
	if runtime.GOOS == "windows" {
		return ".exe"
	}
	return ""
}
