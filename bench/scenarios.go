package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/warrenmesh/warren/bench/internal/nsnet"
)

const (
	rawPort      = "9000"
	heldBurst    = 100     // scenario 6: requests held before the responder starts
	heldMemory   = 100_000 // scenario 8: requests held for the memory figure
	failConc     = 64      // scenario 7: requests in flight
	failRetry    = 3       // scenario 7: warren's WithRetry
	eventTimeout = 30 * time.Second
	mb           = 1e6
)

// plan holds the durations of one run.
type plan struct {
	Quick   bool          `json:"quick"`
	Warmup  time.Duration `json:"-"`
	Measure time.Duration `json:"-"`
	FailRun time.Duration `json:"-"` // scenario 7: load duration
	Grace   time.Duration `json:"-"` // scenario 7: wait for stragglers
	Reps    int           `json:"repetitions"`
	Seeds   bool          `json:"warren_seeds"`  // warren uses seeds instead of mDNS
	Pin     string        `json:"pin,omitempty"` // children pinned to cores: split or same
	// Go children wrote CPU profiles (-profile) or execution traces
	// (-trace), which slow them.
	Profiled bool `json:"profiled,omitempty"`
	Traced   bool `json:"traced,omitempty"`
	// Rounds is -rounds (0: each row's default); RoundMeasure the measured
	// window of each round of a row that runs several.
	Rounds        int           `json:"rounds,omitempty"`
	RoundMeasure  time.Duration `json:"-"`
	RoundMeasureS float64       `json:"round_measure_s"`
	WarmupS       float64       `json:"warmup_s"`
	MeasureS      float64       `json:"measure_s"`
	FailRunS      float64       `json:"failure_load_s"`
	Impls         []impl        `json:"impls"`
	Scenarios     []int         `json:"scenarios"`
	Rows          []string      `json:"rows,omitempty"`
}

func (p *plan) has(im impl) bool { return slices.Contains(p.Impls, im) }

// bench runs scenarios.
type bench struct {
	plan plan
	net  *nsnet.Net
	ps   *procs
	seq  int
	logf func(format string, args ...any)
}

func (b *bench) env() string {
	b.seq++
	return fmt.Sprintf("bench%d", b.seq)
}

func (b *bench) base(im impl, role string) roleConfig {
	c := roleConfig{Role: role, Payload: 16,
		WarmupMS:  int(b.plan.Warmup.Milliseconds()),
		MeasureMS: int(b.plan.Measure.Milliseconds()),
		MaxLifeMS: int((b.plan.Warmup + b.plan.Measure + b.plan.Grace + 2*time.Minute).Milliseconds()),
	}
	if im == implWarren && b.plan.Seeds {
		// Each side seeds the other namespace's default gossip port.
		if role == "requester" || role == "publisher" {
			c.Seeds = net.JoinHostPort(b.net.B.IP, "7946")
		} else {
			c.Seeds = net.JoinHostPort(b.net.A.IP, "7946")
		}
	}
	return c
}

func (b *bench) resultTimeout() time.Duration {
	return b.plan.Warmup + b.plan.Measure + b.plan.Grace + eventTimeout
}

// reqres: one requester in namespace a, responders in b (or the raw or
// hand-off echo: its server in b, its client in a).
//
// gomaxprocs > 0 sets GOMAXPROCS in the Go processes (warren, raw and
// handoff), as a container limited to that many CPUs does (Go reads the
// cgroup quota): both processes share this machine's two cores, and with one
// P each they stop competing for them (cote is single-threaded anyway).
func (b *bench) reqres(ctx context.Context, im impl, conc, payload, responders, gomaxprocs int) (*measure, error) {
	defer b.ps.killAll()
	var cli *proc
	var err error
	if im == implRaw || im == implHandoff {
		addr := net.JoinHostPort(b.net.B.IP, rawPort)
		c := b.base(im, string(im)+"-server")
		c.Addr, c.Procs = addr, gomaxprocs
		srv, err := b.ps.start(b.net.B, im, c)
		if err != nil {
			return nil, err
		}
		if _, err := srv.await(ctx, "ready", eventTimeout); err != nil {
			return nil, err
		}
		c = b.base(im, string(im)+"-client")
		c.Addr, c.Conc, c.Payload, c.Procs = addr, conc, payload, gomaxprocs
		if cli, err = b.ps.start(b.net.A, im, c); err != nil {
			return nil, err
		}
	} else {
		env := b.env()
		c := b.base(im, "requester")
		c.Mode, c.Env, c.Conc, c.Payload, c.Responders, c.Procs = "load", env, conc, payload, responders, gomaxprocs
		// The requester starts first: cote connects at once to a responder
		// that says hello on start, and warren does not care.
		if cli, err = b.ps.start(b.net.A, im, c); err != nil {
			return nil, err
		}
		for range responders {
			c := b.base(im, "responder")
			c.Env, c.Procs = env, gomaxprocs
			if _, err := b.ps.start(b.net.B, im, c); err != nil {
				return nil, err
			}
		}
	}
	// CPU time of every process of the run over the measured window.
	if _, err := cli.await(ctx, "window", b.resultTimeout()); err != nil {
		return nil, err
	}
	if b.ps.trace != "" {
		b.ps.startTraces()
	}
	all := b.ps.all()
	c0, err := cpuOf(all)
	if err != nil {
		return nil, err
	}
	if _, err := cli.await(ctx, "window-end", b.resultTimeout()); err != nil {
		return nil, err
	}
	c1, err := cpuOf(all)
	if err != nil {
		return nil, err
	}
	e, err := cli.await(ctx, "result", b.resultTimeout())
	if err != nil {
		return nil, err
	}
	if e.N == 0 {
		return nil, fmt.Errorf("%s: no request completed in the window", cli.name)
	}
	cpu := (c1 - c0).Seconds()
	m := &measure{Value: e.Rate, P50US: e.P50 / 1e3, P99US: e.P99 / 1e3, CPUUS: cpu / e.N * 1e6, Cores: cpu / e.Secs}
	m.Detail = fmt.Sprintf("%.0f replies in %.1f s; %.1f µs of CPU per request (all processes), %.2f cores busy",
		e.N, e.Secs, m.CPUUS, m.Cores)
	return m, nil
}

// pubsub: one publisher in a, subs subscribers in b; the figure is the sum
// of what the subscribers received per second.
func (b *bench) pubsub(ctx context.Context, im impl, subs int) (*measure, error) {
	defer b.ps.killAll()
	env := b.env()
	var all []*proc
	for range subs {
		c := b.base(im, "subscriber")
		c.Env = env
		s, err := b.ps.start(b.net.B, im, c)
		if err != nil {
			return nil, err
		}
		if _, err := s.await(ctx, "ready", eventTimeout); err != nil {
			return nil, err
		}
		all = append(all, s)
	}
	c := b.base(im, "publisher")
	c.Env, c.Subs, c.GraceMS = env, subs, 3000
	if _, err := b.ps.start(b.net.A, im, c); err != nil {
		return nil, err
	}
	m := &measure{}
	for i, s := range all {
		e, err := s.await(ctx, "result", b.resultTimeout())
		if err != nil {
			return nil, err
		}
		if e.N == 0 {
			return nil, fmt.Errorf("%s %d received nothing in the window", s.name, i+1)
		}
		m.Value += e.Rate
		m.Samples = append(m.Samples, e.Rate)
	}
	m.Detail = "per subscriber: " + joinFloats(m.Samples, "%.0f")
	return m, nil
}

// coldStart: responder up; time from starting a requester process to its
// first reply, over several fresh requester processes.
func (b *bench) coldStart(ctx context.Context, im impl) (*measure, error) {
	defer b.ps.killAll()
	env := b.env()
	c := b.base(im, "responder")
	c.Env = env
	srv, err := b.ps.start(b.net.B, im, c)
	if err != nil {
		return nil, err
	}
	if _, err := srv.await(ctx, "ready", eventTimeout); err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return nil, err
	}
	var samples []float64
	for range b.plan.Reps {
		c := b.base(im, "requester")
		c.Mode, c.Env = "first", env
		cli, err := b.ps.start(b.net.A, im, c)
		if err != nil {
			return nil, err
		}
		e, err := cli.await(ctx, "first", eventTimeout)
		if err != nil {
			return nil, err
		}
		samples = append(samples, float64(e.T-cli.started.UnixNano())/1e6)
		cli.wait(3 * time.Second)
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return repeated(samples, "ms"), nil
}

// appearance: a requester holds heldBurst requests; time from starting a
// responder process to the last of them answered.
func (b *bench) appearance(ctx context.Context, im impl) (*measure, error) {
	var samples []float64
	for range b.plan.Reps {
		d, err := b.appearOnce(ctx, im)
		if err != nil {
			return nil, err
		}
		samples = append(samples, d)
	}
	return repeated(samples, "ms"), nil
}

func (b *bench) appearOnce(ctx context.Context, im impl) (float64, error) {
	defer b.ps.killAll()
	env := b.env()
	c := b.base(im, "requester")
	c.Mode, c.Env, c.Count = "held", env, heldBurst
	cli, err := b.ps.start(b.net.A, im, c)
	if err != nil {
		return 0, err
	}
	e, err := cli.await(ctx, "held", eventTimeout)
	if err != nil {
		return 0, err
	}
	if int(e.N) != heldBurst {
		return 0, fmt.Errorf("%s: %v requests held, want %d", cli.name, e.N, heldBurst)
	}
	// Let the waiting requester settle, as a requester that has been waiting
	// for a while would be.
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return 0, err
	}
	c = b.base(im, "responder")
	c.Env = env
	srv, err := b.ps.start(b.net.B, im, c)
	if err != nil {
		return 0, err
	}
	e, err = cli.await(ctx, "done", eventTimeout)
	if err != nil {
		return 0, err
	}
	return float64(e.T-srv.started.UnixNano()) / 1e6, nil
}

// failure: load over two responders, one SIGKILLed a third into the run.
func (b *bench) failure(ctx context.Context, im impl) (*measure, error) {
	defer b.ps.killAll()
	env := b.env()
	c := b.base(im, "requester")
	c.Mode, c.Env, c.Conc, c.Responders = "fail", env, failConc, 2
	c.MeasureMS, c.GraceMS = int(b.plan.FailRun.Milliseconds()), int(b.plan.Grace.Milliseconds())
	if im == implWarren {
		c.Retry = failRetry
	}
	cli, err := b.ps.start(b.net.A, im, c)
	if err != nil {
		return nil, err
	}
	var victim *proc
	for i := range 2 {
		c := b.base(im, "responder")
		c.Env = env
		p, err := b.ps.start(b.net.B, im, c)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			victim = p
		}
	}
	if _, err := cli.await(ctx, "measuring", eventTimeout); err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, b.plan.FailRun/3); err != nil {
		return nil, err
	}
	victim.sigkill()
	e, err := cli.await(ctx, "result", b.plan.FailRun+b.plan.Grace+eventTimeout)
	if err != nil {
		return nil, err
	}
	f := &failCounts{Issued: e.Issued, Answered: e.Answered, Failed: e.Failed, Retried: e.Retried, Lost: e.Lost, Dup: e.Dup}
	m := &measure{Value: float64(e.Lost), Fail: f,
		Detail: fmt.Sprintf("issued %d, answered %d, failed %d, retried %d, lost %d, answered twice %d",
			f.Issued, f.Answered, f.Failed, f.Retried, f.Lost, f.Dup)}
	if im == implWarren && (f.Lost > 0 || f.Dup > 0) {
		return m, fmt.Errorf("%w: warren with retry on lost %d and answered %d twice", errBroken, f.Lost, f.Dup)
	}
	return m, nil
}

var errBroken = errors.New("bench: scenario broken")

// idle: resident memory of a responder that has served one request and
// then sat idle for a second.
func (b *bench) idle(ctx context.Context, im impl) (*measure, error) {
	defer b.ps.killAll()
	env := b.env()
	c := b.base(im, "idle")
	c.Env = env
	srv, err := b.ps.start(b.net.B, im, c)
	if err != nil {
		return nil, err
	}
	if _, err := srv.await(ctx, "ready", eventTimeout); err != nil {
		return nil, err
	}
	c = b.base(im, "requester")
	c.Mode, c.Env = "first", env
	cli, err := b.ps.start(b.net.A, im, c)
	if err != nil {
		return nil, err
	}
	if _, err := cli.await(ctx, "first", eventTimeout); err != nil {
		return nil, err
	}
	cli.wait(3 * time.Second)
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	rss, err := srv.rss()
	if err != nil {
		return nil, err
	}
	return &measure{Value: float64(rss) / mb, Detail: fmt.Sprintf("VmRSS %d kB", rss>>10)}, nil
}

// heldMemory: growth of a requester's resident memory with heldMemory
// requests held (no responder exists).
func (b *bench) heldMemory(ctx context.Context, im impl) (*measure, error) {
	defer b.ps.killAll()
	c := b.base(im, "requester")
	c.Mode, c.Env, c.Count, c.MaxPending = "hold", b.env(), heldMemory, 2*heldMemory
	cli, err := b.ps.start(b.net.A, im, c)
	if err != nil {
		return nil, err
	}
	if _, err := cli.await(ctx, "ready", eventTimeout); err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	before, err := cli.rss()
	if err != nil {
		return nil, err
	}
	if err := cli.send("go"); err != nil {
		return nil, err
	}
	held, err := cli.await(ctx, "held", 2*eventTimeout)
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	after, err := cli.rss()
	if err != nil {
		return nil, err
	}
	grow := after - before
	detail := fmt.Sprintf("%.0f bytes per held request (VmRSS %.1f MB before, %.1f MB after)",
		float64(grow)/heldMemory, float64(before)/mb, float64(after)/mb)
	if held.Goroutines > 0 {
		detail += fmt.Sprintf("; Go runtime: %d goroutines, stacks %.1f MB, live heap %.1f MB",
			held.Goroutines, float64(held.Stack)/mb, float64(held.Heap)/mb)
	}
	return &measure{Value: float64(grow) / mb, Detail: detail}, nil
}

// repeated summarises repetitions by their median.
func repeated(samples []float64, unit string) *measure {
	s := slices.Clone(samples)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return &measure{Value: med, Samples: samples,
		Detail: fmt.Sprintf("median of %d; min %.1f, max %.1f %s", len(s), s[0], s[len(s)-1], unit)}
}

func joinFloats(v []float64, format string) string {
	var out string
	for i, x := range v {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf(format, x)
	}
	return out
}
