package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/bench/internal/hist"
)

// The benchmark runs every role as a separate process: this same binary,
// re-executed inside a network namespace with envRole set, or Node with
// bench/cote/roles.js. The role's parameters travel as JSON in envConfig;
// the role answers with one JSON event per line on stdout.
const (
	envRole   = "WBENCH_ROLE"   // set (to "1") in a Go child
	envConfig = "WBENCH_CONFIG" // roleConfig as JSON
	envHostNS = "WBENCH_HOSTNS" // the parent's network namespace: children refuse to run in it
)

// roleConfig is what a child is told to do. bench/cote/roles.js reads the
// same fields.
type roleConfig struct {
	Role       string `json:"role"`                  // requester, responder, idle, publisher, subscriber, raw-server, raw-client, handoff-server, handoff-client
	Mode       string `json:"mode,omitempty"`        // requester: load, first, held, hold, fail
	Env        string `json:"env,omitempty"`         // warren/cote environment, unique per run
	Iface      string `json:"iface,omitempty"`       // interface for mDNS and the advertised address
	Seeds      string `json:"seeds,omitempty"`       // warren: seeds instead of mDNS
	Addr       string `json:"addr,omitempty"`        // raw, handoff: address to listen on or dial
	Payload    int    `json:"payload"`               // bytes
	Conc       int    `json:"conc,omitempty"`        // requests in flight
	Responders int    `json:"responders,omitempty"`  // requester: responders to wait for before the load
	Subs       int    `json:"subs,omitempty"`        // publisher: subscribers to wait for
	Count      int    `json:"count,omitempty"`       // held/hold: requests to hold
	Retry      int    `json:"retry,omitempty"`       // warren requester: WithRetry attempts
	MaxPending int    `json:"max_pending,omitempty"` // warren requester: WithMaxPending
	Procs      int    `json:"procs,omitempty"`       // Go roles: GOMAXPROCS, when > 0
	WarmupMS   int    `json:"warmup_ms,omitempty"`
	MeasureMS  int    `json:"measure_ms,omitempty"`
	GraceMS    int    `json:"grace_ms,omitempty"`
	MaxLifeMS  int    `json:"max_life_ms"`       // the child exits by itself after this
	Profile    string `json:"profile,omitempty"` // Go roles: directory for CPU and heap profiles
	Trace      string `json:"trace,omitempty"`   // Go roles: directory for an execution trace (see traceOnSignal)
}

// event is one line a child prints.
type event struct {
	Ev   string  `json:"ev"`             // ready, first, held, done, measuring, result, error
	T    int64   `json:"t,omitempty"`    // wall clock, Unix ns (first, done)
	N    float64 `json:"n,omitempty"`    // count (result, held)
	Secs float64 `json:"secs,omitempty"` // measured window
	Rate float64 `json:"rate,omitempty"` // per second
	P50  float64 `json:"p50,omitempty"`  // ns
	P99  float64 `json:"p99,omitempty"`  // ns
	Msg  string  `json:"msg,omitempty"`  // error

	// Failure scenario counts.
	Issued   uint64 `json:"issued,omitempty"`
	Answered uint64 `json:"answered,omitempty"`
	Failed   uint64 `json:"failed,omitempty"`
	Retried  uint64 `json:"retried,omitempty"`
	Lost     uint64 `json:"lost,omitempty"`
	Dup      uint64 `json:"dup,omitempty"`

	// Memory of a Go requester holding requests (hold mode).
	Stack      uint64 `json:"stack,omitempty"` // runtime.MemStats.StackInuse
	Heap       uint64 `json:"heap,omitempty"`  // runtime.MemStats.HeapInuse
	Goroutines int    `json:"goroutines,omitempty"`
}

var (
	emitMu  sync.Mutex
	emitEnc = json.NewEncoder(os.Stdout)
)

func emit(e event) {
	emitMu.Lock()
	defer emitMu.Unlock()
	_ = emitEnc.Encode(e)
}

// runRole is main for a child process.
func runRole() int {
	var cfg roleConfig
	if err := json.Unmarshal([]byte(os.Getenv(envConfig)), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "bench role: bad %s: %v\n", envConfig, err)
		return 2
	}
	// Safety net: a role discovers peers (mDNS), so it must never run in the
	// host's network namespace.
	self, err := os.Readlink("/proc/self/ns/net")
	if host := os.Getenv(envHostNS); err != nil || host == "" || self == host {
		fmt.Fprintf(os.Stderr, "bench %s: refusing to run outside the benchmark's network namespace\n", cfg.Role)
		return 3
	}
	life := time.Duration(cfg.MaxLifeMS) * time.Millisecond
	if life <= 0 {
		life = time.Minute
	}
	time.AfterFunc(life, func() {
		fmt.Fprintf(os.Stderr, "bench %s: maximum lifetime reached\n", cfg.Role)
		os.Exit(4)
	})
	// No deadline on ctx: requests then carry none, as with cote's default
	// (no request timeout); the lifetime is enforced by the timer above.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.Profile != "" {
		stop, err := startProfile(cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: profile: %v\n", cfg.Role, err)
			return 1
		}
		defer stop()
	}
	if cfg.Procs > 0 {
		runtime.GOMAXPROCS(cfg.Procs)
	}
	if cfg.Trace != "" {
		stopTrace := traceOnSignal(cfg)
		defer stopTrace()
	}
	var run func(context.Context, roleConfig) error
	switch cfg.Role {
	case "responder", "idle":
		run = warrenResponder
	case "requester":
		run = warrenRequester
	case "publisher":
		run = warrenPublisher
	case "subscriber":
		run = warrenSubscriber
	case "raw-server":
		run = rawServer
	case "raw-client":
		run = rawClient
	case "handoff-server":
		run = handoffServer
	case "handoff-client":
		run = handoffClient
	default:
		err = fmt.Errorf("unknown role %q", cfg.Role)
	}
	if run != nil {
		err = run(ctx, cfg)
	}
	if err != nil {
		emit(event{Ev: "error", Msg: err.Error()})
		return 1
	}
	return 0
}

// startProfile writes a CPU profile of the whole life of the process, and a
// heap profile at its end, into cfg.Profile. The process ends cleanly on
// SIGTERM, which the benchmark sends instead of SIGKILL when profiling.
func startProfile(cfg roleConfig) (stop func(), err error) {
	name := cfg.Role
	if cfg.Mode != "" {
		name += "-" + cfg.Mode
	}
	base := filepath.Join(cfg.Profile, fmt.Sprintf("%s-%d", name, os.Getpid()))
	f, err := os.Create(base + ".cpu.pprof")
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
			if h, err := os.Create(base + ".heap.pprof"); err == nil {
				_ = pprof.Lookup("heap").WriteTo(h, 0)
				h.Close()
			}
		})
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() {
		<-sig
		stop()
		os.Exit(0)
	}()
	return stop, nil
}

// traceOnSignal writes an execution trace of the process into cfg.Trace
// when the first SIGUSR1 comes (the benchmark sends it to every Go child as
// a request/response row's measured window begins), for traceFor(cfg). The
// returned function ends the wait, or the trace, and returns once the file
// is closed.
func traceOnSignal(cfg roleConfig) (stop func()) {
	name := cfg.Role
	if cfg.Mode != "" {
		name += "-" + cfg.Mode
	}
	path := filepath.Join(cfg.Trace, fmt.Sprintf("%s-%d.trace", name, os.Getpid()))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(sig)
		select {
		case <-sig:
		case <-quit:
			return
		}
		if err := writeTrace(path, traceFor(cfg), quit); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: trace: %v\n", cfg.Role, err)
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

// traceFor is how long a role's trace lasts: a second, or half the
// measured window if that is shorter, so that it ends inside the window.
func traceFor(cfg roleConfig) time.Duration {
	return min(time.Second, time.Duration(cfg.MeasureMS)*time.Millisecond/2)
}

// writeTrace writes an execution trace of d (less if quit closes first)
// into a new file at path, making its directory if need be.
func writeTrace(path string, d time.Duration, quit <-chan struct{}) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		return err
	}
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-quit:
		t.Stop()
	}
	trace.Stop()
	return f.Close()
}

// waitCommand blocks until the parent writes word on a line of stdin.
func waitCommand(ctx context.Context, word string) error {
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case l, ok := <-lines:
			if !ok {
				return errors.New("stdin closed")
			}
			if l == word {
				return nil
			}
		}
	}
}

// window runs the warm-up and measuring phases: phase() is 0 while warming
// up, 1 while measuring and 2 after; it returns the measured duration.
type window struct{ phase atomic.Int32 }

func (w *window) get() int32 { return w.phase.Load() }

func (w *window) run(ctx context.Context, cfg roleConfig) (time.Duration, error) {
	if err := sleepCtx(ctx, time.Duration(cfg.WarmupMS)*time.Millisecond); err != nil {
		return 0, err
	}
	t0 := time.Now()
	w.phase.Store(1)
	emit(event{Ev: "window"}) // the benchmark samples CPU time now and at "window-end"
	err := sleepCtx(ctx, time.Duration(cfg.MeasureMS)*time.Millisecond)
	w.phase.Store(2)
	d := time.Since(t0)
	emit(event{Ev: "window-end"})
	return d, err
}

// errStopped, returned by a call of runCallers, stops its caller quietly.
var errStopped = errors.New("stopped")

// runCallers runs n callers, each making requests one after another with
// call(i) until the window ends, and reports their replies per second and
// latencies. A call's error stops its caller; the first one (other than
// errStopped) is returned once the window has ended.
func runCallers(ctx context.Context, cfg roleConfig, n int, call func(i int) error) error {
	var w window
	hs := make([]hist.H, n)
	counts := make([]int, n)
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for w.get() != 2 {
				start := time.Now()
				if err := call(i); err != nil {
					if !errors.Is(err, errStopped) {
						firstErr.CompareAndSwap(nil, &err)
					}
					return
				}
				if w.get() == 1 {
					counts[i]++
					hs[i].Record(int64(time.Since(start)))
				}
			}
		})
	}
	d, err := w.run(ctx, cfg)
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return fmt.Errorf("request: %w", *p)
	}
	if err != nil {
		return err
	}
	emitLoadResult(d, hs, counts)
	return nil
}

// emitLoadResult reports a load run over a window of d: the callers'
// latency histograms and reply counts are summed.
func emitLoadResult(d time.Duration, hs []hist.H, counts []int) {
	var h hist.H
	n := 0
	for i := range hs {
		h.Merge(&hs[i])
		n += counts[i]
	}
	emit(event{Ev: "result", N: float64(n), Secs: d.Seconds(), Rate: float64(n) / d.Seconds(),
		P50: float64(h.Quantile(0.5)), P99: float64(h.Quantile(0.99))})
}

// dialRetry dials addr until it answers or ctx ends (the server may not
// listen yet).
func dialRetry(ctx context.Context, addr string) (net.Conn, error) {
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// rawServer echoes length-prefixed frames on every connection, flushing only
// when no further request is already buffered (batched writes).
func rawServer(ctx context.Context, cfg roleConfig) error {
	return serveTCP(ctx, cfg.Addr, func(c net.Conn) { go rawConn(c) })
}

// rawConn echoes the frames of one connection until it ends.
func rawConn(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 256<<10)
	bw := bufio.NewWriterSize(c, 256<<10)
	var hdr [4]byte
	buf := make([]byte, 0, 64<<10)
	for {
		if br.Buffered() < 4 {
			if bw.Flush() != nil {
				return
			}
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > 16<<20 {
			return
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		bw.Write(hdr[:])
		bw.Write(buf)
	}
}

// serveTCP listens on addr, reports "ready", and hands each accepted
// connection to serve (on the accepting goroutine: serve starts what runs
// it) until ctx ends.
func serveTCP(ctx context.Context, addr string, serve func(net.Conn)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	emit(event{Ev: "ready"})
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil
		}
		serve(c)
	}
}

// rawClient keeps cfg.Conc frames in flight on one connection: it writes
// them all, then writes one more for each reply it reads, flushing only when
// it would otherwise block on the read. With Conc 1 it is a plain ping-pong.
func rawClient(ctx context.Context, cfg roleConfig) error {
	c, err := dialRetry(ctx, cfg.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	context.AfterFunc(ctx, func() { c.Close() })
	br := bufio.NewReaderSize(c, 256<<10)
	bw := bufio.NewWriterSize(c, 256<<10)
	frame := make([]byte, 4+cfg.Payload)
	binary.BigEndian.PutUint32(frame, uint32(cfg.Payload))
	reply := make([]byte, len(frame))
	sent := make([]time.Time, cfg.Conc) // ring: replies come back in order
	head, tail := 0, 0
	send := func() {
		sent[head%cfg.Conc] = time.Now()
		head++
		bw.Write(frame)
	}
	recv := func() error {
		if br.Buffered() < len(reply) {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if _, err := io.ReadFull(br, reply); err != nil {
			return err
		}
		tail++
		return nil
	}
	// First round trip, then the window.
	send()
	if err := recv(); err != nil {
		return err
	}
	emit(event{Ev: "first", T: time.Now().UnixNano()})
	var w window
	var h hist.H
	var count int
	done := make(chan struct{})
	var loopErr error
	go func() {
		defer close(done)
		for range cfg.Conc {
			send()
		}
		for {
			ph := w.get()
			if ph == 2 {
				return
			}
			start := sent[tail%cfg.Conc]
			if err := recv(); err != nil {
				loopErr = err
				return
			}
			if ph == 1 {
				count++
				h.Record(int64(time.Since(start)))
			}
			send()
		}
	}()
	d, err := w.run(ctx, cfg)
	if err != nil {
		return err
	}
	<-done
	if loopErr != nil {
		return loopErr
	}
	emit(event{Ev: "result", N: float64(count), Secs: d.Seconds(), Rate: float64(count) / d.Seconds(),
		P50: float64(h.Quantile(0.5)), P99: float64(h.Quantile(0.99))})
	return nil
}
