package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/bench/internal/nsnet"
)

var nodeBin = "/usr/bin/node"

func main() {
	if os.Getenv(envRole) != "" {
		os.Exit(runRole())
	}
	os.Exit(run())
}

type options struct {
	quick   bool
	out     string
	only    string
	rows    string
	impls   string
	seeds   bool
	verbose bool
	measure time.Duration
	warmup  time.Duration
	profile string
	trace   string
	pin     string
	rounds  int
}

func run() int {
	var o options
	flag.BoolVar(&o.quick, "quick", false, "a few seconds per scenario (for CI: checks the tool works, not the speed)")
	flag.StringVar(&o.out, "out", "", "report directory (default: bench/out in the module)")
	flag.StringVar(&o.only, "only", "", "comma-separated scenario numbers to run, e.g. 1,5 (default: all)")
	flag.StringVar(&o.rows, "rows", "", "comma-separated row IDs to run, e.g. 1c,1d (default: every row of the scenarios chosen)")
	flag.StringVar(&o.impls, "impl", "warren,cote,raw", "implementations to run: warren, cote, raw, and handoff (raw TCP with warren's goroutine hand-offs; opt-in, e.g. -impl warren,raw,handoff)")
	flag.BoolVar(&o.seeds, "seeds", false, "warren finds peers by seed addresses instead of mDNS")
	flag.BoolVar(&o.verbose, "v", false, "print every event of every process")
	flag.StringVar(&o.profile, "profile", "", "directory where Go children write CPU and heap profiles (pprof)")
	flag.StringVar(&o.trace, "trace", "", "directory where the Go children of request/response rows write a runtime execution trace (go tool trace) of the first second of each measured window, or of half the window if shorter, as DIR/ROW[/roundN]/ROLE-PID.trace")
	flag.StringVar(&o.pin, "pin", "", "pin the children to cores, the same way for every implementation: split (each child on a core of its own, in turn) or same (every child on the last core); a Go child then runs with GOMAXPROCS=1, since the runtime counts the cores it may use, unless GOMAXPROCS is set in the environment, which the children inherit; for diagnosis, not the figures the targets are about")
	flag.DurationVar(&o.measure, "measure", 0, "measured window of throughput runs (default 8s, -quick 1s)")
	flag.DurationVar(&o.warmup, "warmup", 0, "warm-up before each window (default 2s, -quick 300ms)")
	flag.IntVar(&o.rounds, "rounds", 0, "rounds of every throughput row (scenarios 1 to 4), the implementations taking turns within each round; a row's figures are then its median round's and its ratios the medians of the rounds' ratios (default: 5 rounds of 4s for rows 1a and 1e, one for the others; -quick: one)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	code, err := runBench(ctx, o)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted; every process and namespace it made is removed")
			return 130
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return code
}

func runBench(ctx context.Context, o options) (int, error) {
	started := time.Now()
	p := plan{Quick: o.quick, Warmup: 2 * time.Second, Measure: 8 * time.Second, FailRun: 6 * time.Second,
		Grace: 5 * time.Second, Reps: 5, Seeds: o.seeds, Pin: o.pin, Profiled: o.profile != "", Traced: o.trace != ""}
	if o.quick {
		p.Warmup, p.Measure, p.FailRun, p.Grace, p.Reps = 300*time.Millisecond, time.Second, 2*time.Second, 2*time.Second, 1
	}
	if o.measure > 0 {
		p.Measure = o.measure
	}
	if o.warmup > 0 {
		p.Warmup = o.warmup
	}
	if o.rounds < 0 {
		return 2, fmt.Errorf("-rounds: %d is negative", o.rounds)
	}
	p.Rounds, p.RoundMeasure = o.rounds, roundMeasure
	if o.measure > 0 || o.quick {
		p.RoundMeasure = p.Measure
	}
	p.RoundMeasureS = p.RoundMeasure.Seconds()
	p.WarmupS, p.MeasureS, p.FailRunS = p.Warmup.Seconds(), p.Measure.Seconds(), p.FailRun.Seconds()
	switch o.pin {
	case "", pinSplit, pinSame:
	default:
		return 2, fmt.Errorf("-pin: unknown placement %q (want split or same)", o.pin)
	}
	for _, s := range strings.Split(o.impls, ",") {
		switch im := impl(strings.TrimSpace(s)); im {
		case implWarren, implCote, implRaw, implHandoff:
			p.Impls = append(p.Impls, im)
		default:
			return 2, fmt.Errorf("-impl: unknown implementation %q (want warren, cote, raw, handoff)", s)
		}
	}
	for _, s := range strings.Split(o.only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 8 {
			return 2, fmt.Errorf("-only: %q is not a scenario number 1-8", s)
		}
		p.Scenarios = append(p.Scenarios, n)
	}
	for _, s := range strings.Split(o.rows, ",") {
		if s = strings.TrimSpace(s); s != "" {
			p.Rows = append(p.Rows, s)
		}
	}
	if os.Geteuid() != 0 {
		return 1, errors.New("the benchmark needs root: every process runs in a network namespace it creates")
	}

	root, err := findRoot()
	if err != nil {
		return 1, err
	}
	if o.out == "" {
		o.out = filepath.Join(root, "bench", "out")
	}
	coteDir := filepath.Join(root, "bench", "cote")
	m := machineInfo()
	if p.has(implCote) {
		if err := ensureCote(ctx, coteDir); err != nil {
			return 1, err
		}
		m.Node = commandLine("node", "--version")
		m.Cote = coteVersion(coteDir)
	}
	self, err := os.Executable()
	if err != nil {
		return 1, err
	}
	hostNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return 1, fmt.Errorf("reading this process's network namespace: %w", err)
	}
	if stale := nsnet.Stale(ctx); len(stale) > 0 {
		fmt.Fprintf(os.Stderr, "bench: note: namespaces left by an earlier, killed run (remove with `ip netns delete NAME`): %s\n", strings.Join(stale, " "))
	}
	nw, err := nsnet.New(ctx)
	if err != nil {
		return 1, err
	}
	if o.profile != "" {
		if o.profile, err = filepath.Abs(o.profile); err == nil {
			err = os.MkdirAll(o.profile, 0o755)
		}
		if err != nil {
			return 1, fmt.Errorf("-profile: %w", err)
		}
	}
	if o.trace != "" {
		if o.trace, err = filepath.Abs(o.trace); err == nil {
			err = os.MkdirAll(o.trace, 0o755)
		}
		if err != nil {
			return 1, fmt.Errorf("-trace: %w", err)
		}
	}
	ps := &procs{self: self, coteDir: coteDir, hostNS: hostNS, verbose: o.verbose, profile: o.profile, traces: o.trace, pin: o.pin, live: map[*proc]bool{}}
	defer func() {
		ps.killAll()
		if err := nw.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		}
	}()
	b := &bench{plan: p, net: nw, ps: ps, logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f, a...) }}
	rep := &report{Started: started, Machine: m, Plan: p,
		Topology: fmt.Sprintf("two network namespaces joined by a veth pair: requesters and the publisher in one (%s), responders and subscribers in the other (%s); nothing in the host namespace", nw.A.IP, nw.B.IP)}
	fmt.Fprintf(os.Stderr, "bench: %d cores, %s, load average %s; namespaces %s and %s\n", m.Cores, m.Go, m.LoadBefore, nw.A.NS, nw.B.NS)

	jobs := b.jobs()
	for _, id := range p.Rows {
		if !slices.ContainsFunc(jobs, func(j job) bool { return j.row.ID == id }) {
			return 2, fmt.Errorf("-rows: no row %q (rows are 1a to 8b, as in the report)", id)
		}
	}
	for _, j := range jobs {
		r := j.row
		if len(p.Scenarios) > 0 && !slices.Contains(p.Scenarios, r.Scenario) {
			continue
		}
		if len(p.Rows) > 0 && !slices.Contains(p.Rows, r.ID) {
			continue
		}
		if err := b.runRow(ctx, j, rep); err != nil {
			return 130, err
		}
		r.finish()
		rep.Rows = append(rep.Rows, r)
	}
	rep.Machine.LoadAfter = loadAvg()
	rep.Seconds = time.Since(started).Seconds()
	if err := rep.write(o.out); err != nil {
		return 1, fmt.Errorf("writing the report: %w", err)
	}
	fmt.Println(rep.table())
	fmt.Printf("report: %s (and report.json, ratios.svg); %.0f s; load average before %s, after %s\n",
		filepath.Join(o.out, "report.md"), rep.Seconds, m.LoadBefore, rep.Machine.LoadAfter)
	if len(rep.Broken) > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d broken:\n  %s\n", len(rep.Broken), strings.Join(rep.Broken, "\n  "))
		return 1, nil
	}
	return 0, nil
}

func oneLine(s string) string { return strings.ReplaceAll(s, "**", "") }

type job struct {
	row *row
	run map[impl]func(context.Context) (*measure, error)
	// rounds is how many rounds the row runs by default (0: one); only
	// throughput rows have it set, and -rounds overrides it for them.
	rounds     int
	throughput bool
}

// roundMeasure is the measured window of a round when a row runs several
// (unless -measure says otherwise): the rounds together measure longer
// than one 8 s window does.
const roundMeasure = 4 * time.Second

// runRow measures j's row with every implementation of the plan, in one
// or more rounds, and fills in the row's figures. It fails only when ctx
// ends; a broken measurement is recorded in the row and the report.
//
// With several rounds the implementations take turns within each round
// (in reverse order every other round), so that each of them meets the
// machine's faster and slower moments alike: these machines' speed moves
// by 20 % or more from one minute to the next, which one run of each,
// some 30 s apart, passes on to their ratio whole.
func (b *bench) runRow(ctx context.Context, j job, rep *report) error {
	r := j.row
	var impls []impl
	for _, im := range []impl{implWarren, implCote, implRaw, implHandoff} {
		if j.run[im] != nil && b.plan.has(im) {
			impls = append(impls, im)
		}
	}
	rounds := 1
	if j.throughput {
		switch {
		case b.plan.Rounds > 0:
			rounds = b.plan.Rounds
		case j.rounds > 0 && !b.plan.Quick:
			rounds = j.rounds
		}
	}
	if rounds > 1 {
		saved := b.plan.Measure
		b.plan.Measure = b.plan.RoundMeasure
		defer func() { b.plan.Measure = saved }()
		r.Rounds = rounds
	}
	got := map[impl][]*measure{}
	failed := map[impl]bool{}
	for k := range rounds {
		order := slices.Clone(impls)
		if k%2 == 1 {
			slices.Reverse(order)
		}
		for _, im := range order {
			if failed[im] {
				continue
			}
			if b.ps.traces != "" {
				b.ps.trace = filepath.Join(b.ps.traces, r.ID)
				if rounds > 1 {
					b.ps.trace = filepath.Join(b.ps.trace, fmt.Sprintf("round%d", k+1))
				}
			}
			t0 := time.Now()
			res, err := j.run[im](ctx)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				if res == nil {
					res = &measure{}
				}
				res.Error = err.Error()
				failed[im] = true
				rep.Broken = append(rep.Broken, fmt.Sprintf("%s %s, %s: %v", r.ID, r.Name, im, err))
			}
			got[im] = append(got[im], res)
			round := ""
			if rounds > 1 {
				round = fmt.Sprintf(" round %d/%d", k+1, rounds)
			}
			fmt.Fprintf(os.Stderr, "%-4s %-34s %-7s %-40s (%.1f s)%s\n", r.ID, r.Name, im, oneLine(res.cell(r)), time.Since(t0).Seconds(), round)
			if err != nil {
				fmt.Fprintf(os.Stderr, "     error: %v\n", err)
			}
		}
	}
	for _, im := range impls {
		res := combineRounds(got[im])
		switch im {
		case implWarren:
			r.Warren = res
		case implCote:
			r.Cote = res
		case implRaw:
			r.Raw = res
		case implHandoff:
			r.Handoff = res
		}
	}
	return nil
}

// jobs lists every row and how each implementation measures it.
func (b *bench) jobs() []job {
	reqres := func(conc, payload, responders int, raw bool, procs ...int) map[impl]func(context.Context) (*measure, error) {
		gomaxprocs := 0
		if len(procs) > 0 {
			gomaxprocs = procs[0]
		}
		m := map[impl]func(context.Context) (*measure, error){}
		for _, im := range []impl{implWarren, implCote, implRaw, implHandoff} {
			if (im == implRaw || im == implHandoff) && !raw {
				continue
			}
			m[im] = func(ctx context.Context) (*measure, error) {
				return b.reqres(ctx, im, conc, payload, responders, gomaxprocs)
			}
		}
		return m
	}
	both := func(fn func(context.Context, impl) (*measure, error)) map[impl]func(context.Context) (*measure, error) {
		return map[impl]func(context.Context) (*measure, error){
			implWarren: func(ctx context.Context) (*measure, error) { return fn(ctx, implWarren) },
			implCote:   func(ctx context.Context) (*measure, error) { return fn(ctx, implCote) },
		}
	}
	pubsub := func(subs int) map[impl]func(context.Context) (*measure, error) {
		return both(func(ctx context.Context, im impl) (*measure, error) { return b.pubsub(ctx, im, subs) })
	}
	return []job{
		{&row{ID: "1a", Scenario: 1, Name: "req/res, 1 in flight", Unit: "req/s", HigherBetter: true, Payload: 16, InFlight: 1,
			Target: "≥ 1.2× cote, ≥ 0.9× raw", check: ratioAtLeast(1.2, 0.9), ratioTargets: [2]float64{1.2, 0.9}},
			reqres(1, 16, 1, true), 5, true},
		{&row{ID: "1b", Scenario: 1, Name: "req/res, 16 in flight", Unit: "req/s", HigherBetter: true, Payload: 16, InFlight: 16},
			reqres(16, 16, 1, true), 0, true},
		{&row{ID: "1c", Scenario: 1, Name: "req/res, 64 in flight", Unit: "req/s", HigherBetter: true, Payload: 16, InFlight: 64,
			Target: "≥ 5× cote", check: ratioAtLeast(5, 0), ratioTargets: [2]float64{5, 0}},
			reqres(64, 16, 1, true), 0, true},
		{&row{ID: "1d", Scenario: 1, Name: "req/res, 64 in flight, 1 core per Go process", Unit: "req/s", HigherBetter: true, Payload: 16, InFlight: 64},
			reqres(64, 16, 1, true, 1), 0, true},
		{&row{ID: "1e", Scenario: 1, Name: "req/res, 1 in flight, 1 core per Go process", Unit: "req/s", HigherBetter: true, Payload: 16, InFlight: 1},
			reqres(1, 16, 1, true, 1), 5, true},
		{&row{ID: "2", Scenario: 2, Name: "req/res, 64 in flight, 3 responders", Unit: "req/s", HigherBetter: true, Payload: 16, InFlight: 64},
			reqres(64, 16, 3, false), 0, true},
		{&row{ID: "3a", Scenario: 3, Name: "req/res, 1 KiB, 16 in flight", Unit: "req/s", HigherBetter: true, Payload: 1 << 10, InFlight: 16},
			reqres(16, 1<<10, 1, true), 0, true},
		{&row{ID: "3b", Scenario: 3, Name: "req/res, 64 KiB, 16 in flight", Unit: "req/s", HigherBetter: true, Payload: 64 << 10, InFlight: 16},
			reqres(16, 64<<10, 1, true), 0, true},
		{&row{ID: "4a", Scenario: 4, Name: "pub/sub, 1 → 1", Unit: "msg/s", HigherBetter: true, Payload: 16,
			Target: "≥ 5× cote", check: ratioAtLeast(5, 0), ratioTargets: [2]float64{5, 0}},
			pubsub(1), 0, true},
		{&row{ID: "4b", Scenario: 4, Name: "pub/sub, 1 → 4", Unit: "msg/s", HigherBetter: true, Payload: 16},
			pubsub(4), 0, true},
		{&row{ID: "5", Scenario: 5, Name: "cold start to first reply", Unit: "ms", Payload: 16,
			Target: "< 150 ms", check: warrenBelow(150)},
			both(b.coldStart), 0, false},
		{&row{ID: "6", Scenario: 6, Name: "appearance: 100 held answered", Unit: "ms", Payload: 16,
			Target: "< 50 ms", check: warrenBelow(50)},
			both(b.appearance), 0, false},
		{&row{ID: "7", Scenario: 7, Name: "responder SIGKILLed under load", Unit: "requests", Payload: 16, InFlight: failConc,
			Target: "0 lost, 0 twice", check: func(r *row) *bool {
				if r.Warren == nil || r.Warren.Fail == nil {
					return nil
				}
				return boolp(r.Warren.Fail.Lost == 0 && r.Warren.Fail.Dup == 0)
			}},
			both(b.failure), 0, false},
		{&row{ID: "8a", Scenario: 8, Name: "idle responder, resident memory", Unit: "MB",
			Target: "< 20 MB", check: warrenBelow(20)},
			both(b.idle), 0, false},
		{&row{ID: "8b", Scenario: 8, Name: "memory growth, 100 k held requests", Unit: "MB", Payload: 16},
			both(b.heldMemory), 0, false},
	}
}

// findRoot finds the module root: the directory holding bench/cote.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "bench", "cote", "roles.js")); err == nil {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("cannot find bench/cote/roles.js above %s: run from the warren module", dir)
		}
	}
}

// ensureCote installs cote from the lockfile when node_modules is missing.
// Install scripts are not run: nothing of cote runs outside a namespace.
func ensureCote(ctx context.Context, dir string) error {
	if _, err := os.Stat(nodeBin); err != nil {
		p, err := exec.LookPath("node")
		if err != nil {
			return fmt.Errorf("cote needs Node.js (node not found; use -impl warren,raw to skip cote): %w", err)
		}
		nodeBin = p
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "cote", "package.json")); err == nil {
		return nil
	}
	fmt.Fprintf(os.Stderr, "bench: installing cote in %s (npm ci)\n", dir)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm ci in %s: %w", dir, err)
	}
	return nil
}

func coteVersion(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", "cote", "package.json"))
	if err != nil {
		return ""
	}
	const key = `"version": "`
	s := string(b)
	if i := strings.Index(s, key); i >= 0 {
		s = s[i+len(key):]
		if j := strings.IndexByte(s, '"'); j >= 0 {
			return s[:j]
		}
	}
	return ""
}

func commandLine(argv ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func machineInfo() machine {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version(), LoadBefore: loadAvg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
