package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestStaticDefaultsPortsAndRepeats(t *testing.T) {
	checkGoroutines(t)
	d := Static("10.0.0.1", " 10.0.0.2:8000 ", "", "fd00::1", "[fd00::2]", "[fd00::3]:9000", "seed.example", "10.0.0.1:7946")
	want := []string{"10.0.0.1:7946", "10.0.0.2:8000", "[fd00::1]:7946", "[fd00::2]:7946", "[fd00::3]:9000", "seed.example:7946"}
	if got := d.String(); got != "seeds "+strings.Join(want, ", ") {
		t.Errorf("String() = %q", got)
	}
	d.(*static).every = 20 * time.Millisecond
	var rec recorder
	stop := runAsync(t, d, Self{}, rec.found)
	waitFor(t, 5*time.Second, "three reports", func() bool { return rec.count() >= 3 })
	if err := stop(); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
	n := rec.count()
	for i, call := range rec.snapshot() {
		if !slices.Equal(call, want) {
			t.Errorf("call %d: got %v, want %v", i, call, want)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if rec.count() != n {
		t.Errorf("found called after Run returned")
	}
}

func TestStaticDefaultIntervalAndCopy(t *testing.T) {
	d := Static("10.0.0.1").(*static)
	if d.every != 30*time.Second {
		t.Errorf("interval = %v, want 30s", d.every)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var got []string
	err := d.Run(ctx, Self{}, func(addrs []string) {
		addrs[0] = "mutated"
		got = addrs
		cancel()
	})
	if err != nil || len(got) != 1 {
		t.Fatalf("Run = %v, got %v", err, got)
	}
	if d.addrs[0] != "10.0.0.1:7946" {
		t.Errorf("found could modify Static's addresses: %v", d.addrs)
	}
}

func TestStaticEmptyBlocksUntilCancel(t *testing.T) {
	checkGoroutines(t)
	d := Static("", " ")
	if d.String() != "seeds (none)" {
		t.Errorf("String() = %q", d.String())
	}
	var rec recorder
	stop := runAsync(t, d, Self{}, rec.found)
	time.Sleep(20 * time.Millisecond)
	if err := stop(); err != nil || rec.count() != 0 {
		t.Fatalf("Run = %v with %d calls", err, rec.count())
	}
}

func TestDNSReportsAllAddresses(t *testing.T) {
	checkGoroutines(t)
	var gotHost atomic.Value
	var hadDeadline atomic.Bool
	lookup := func(ctx context.Context, host string) ([]string, error) {
		gotHost.Store(host)
		_, ok := ctx.Deadline()
		hadDeadline.Store(ok)
		return []string{"10.0.0.2", "10.0.0.1", "fd00::1", "10.0.0.1", "not-an-ip"}, nil
	}
	d := DNS("svc.example", 7000, WithResolver(lookup), WithLogger(slog.New(slog.DiscardHandler)))
	if d.String() != "dns svc.example:7000" {
		t.Errorf("String() = %q", d.String())
	}
	var rec recorder
	stop := runAsync(t, d, Self{}, rec.found)
	waitFor(t, 5*time.Second, "a report", func() bool { return rec.count() >= 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1:7000", "10.0.0.2:7000", "[fd00::1]:7000"}
	if got := rec.snapshot()[0]; !slices.Equal(got, want) {
		t.Errorf("found %v, want %v", got, want)
	}
	if gotHost.Load() != "svc.example" || !hadDeadline.Load() {
		t.Errorf("lookup got host %v, deadline %v", gotHost.Load(), hadDeadline.Load())
	}
}

func TestDNSDefaults(t *testing.T) {
	d := DNS("svc", 0, nil).(*dnsDiscoverer)
	if d.port != DefaultPort || d.cfg.interval != 5*time.Second || d.cfg.lookup == nil {
		t.Errorf("defaults: port %d interval %v", d.port, d.cfg.interval)
	}
	if d.String() != "dns svc:7946" {
		t.Errorf("String() = %q", d.String())
	}
	d = DNS("svc", 1, WithInterval(-1), WithResolver(nil), WithLogger(nil)).(*dnsDiscoverer)
	if d.cfg.interval != 5*time.Second || d.cfg.lookup == nil || d.cfg.log != nil {
		t.Errorf("zero options changed defaults: %+v", d.cfg)
	}
}

func TestDNSRetriesAfterErrors(t *testing.T) {
	checkGoroutines(t)
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var calls atomic.Int32
	lookup := func(ctx context.Context, host string) ([]string, error) {
		if calls.Add(1) <= 2 {
			return nil, errors.New("temporary failure in name resolution")
		}
		return []string{"10.1.2.3"}, nil
	}
	d := DNS("svc", 7946, WithResolver(lookup), WithInterval(10*time.Millisecond), WithLogger(log))
	var rec recorder
	stop := runAsync(t, d, Self{}, rec.found)
	waitFor(t, 5*time.Second, "a report after errors", func() bool { return rec.count() >= 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if calls.Load() < 3 {
		t.Errorf("only %d lookups", calls.Load())
	}
	if got := rec.snapshot()[0]; !slices.Equal(got, []string{"10.1.2.3:7946"}) {
		t.Errorf("found %v", got)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if s := logs.String(); strings.Count(s, "level=DEBUG") < 2 || !strings.Contains(s, "temporary failure") {
		t.Errorf("lookup errors not logged at debug:\n%s", s)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestDNSInterval(t *testing.T) {
	checkGoroutines(t)
	const interval = 60 * time.Millisecond
	var mu sync.Mutex
	var times []time.Time
	lookup := func(ctx context.Context, host string) ([]string, error) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		return []string{"10.0.0.1"}, nil
	}
	start := time.Now()
	var rec recorder
	stop := runAsync(t, DNS("svc", 1, WithResolver(lookup), WithInterval(interval)), Self{}, rec.found)
	waitFor(t, 5*time.Second, "four reports", func() bool { return rec.count() >= 4 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if first := times[0].Sub(start); first > interval/2 {
		t.Errorf("first lookup after %v, want immediately", first)
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < interval-5*time.Millisecond {
			t.Errorf("lookup %d only %v after the previous one (interval %v)", i, gap, interval)
		}
	}
}

func TestDNSInvalidConfig(t *testing.T) {
	for _, d := range []Discoverer{DNS("", 1), DNS("svc", 70000), DNS("svc", -1)} {
		err := d.Run(context.Background(), Self{}, func([]string) { t.Error("found called") })
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Run = %v, want ErrInvalidConfig", d, err)
		}
	}
}

func TestDNSDoesNotReportAfterCancel(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithCancel(context.Background())
	lookup := func(lctx context.Context, host string) ([]string, error) {
		cancel() // the context ends while the lookup is in flight
		return []string{"10.0.0.1"}, nil
	}
	err := DNS("svc", 1, WithResolver(lookup)).Run(ctx, Self{}, func([]string) { t.Error("found called after cancel") })
	if err != nil {
		t.Fatal(err)
	}
}

func TestMultiString(t *testing.T) {
	a := &fakeDiscoverer{name: "a"}
	b := &fakeDiscoverer{name: "b"}
	c := &fakeDiscoverer{name: "c"}
	if got := Multi(nil, a, nil, b).String(); got != "a + b" {
		t.Errorf("String() = %q", got)
	}
	if got := Multi(Multi(a, b), nil, c).String(); got != "a + b + c" {
		t.Errorf("nested String() = %q", got)
	}
	if got := Multi(nil, a); got != Discoverer(a) {
		t.Errorf("Multi of one = %v, want it unchanged", got)
	}
	if got := Multi().String(); got != "none" {
		t.Errorf("empty String() = %q", got)
	}
}

func TestMultiRunsAllAndSerialisesFound(t *testing.T) {
	checkGoroutines(t)
	reporter := func(name string) Discoverer {
		return &fakeDiscoverer{name: name, run: func(ctx context.Context, _ Self, found func([]string)) error {
			for i := 0; ; i++ {
				found([]string{fmt.Sprintf("%s:%d", name, i)})
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Millisecond):
				}
			}
		}}
	}
	var inside atomic.Int32
	var concurrent atomic.Bool
	var rec recorder
	found := func(addrs []string) {
		if inside.Add(1) > 1 {
			concurrent.Store(true)
		}
		time.Sleep(100 * time.Microsecond)
		rec.found(addrs)
		inside.Add(-1)
	}
	stop := runAsync(t, Multi(reporter("a"), reporter("b")), Self{}, found)
	seen := func(prefix string) bool {
		for _, c := range rec.snapshot() {
			if strings.HasPrefix(c[0], prefix) {
				return true
			}
		}
		return false
	}
	waitFor(t, 5*time.Second, "reports from both", func() bool { return seen("a:") && seen("b:") && rec.count() > 20 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if concurrent.Load() {
		t.Error("found was called concurrently")
	}
}

func TestMultiFailureKeepsOthersRunning(t *testing.T) {
	checkGoroutines(t)
	errBoom := errors.New("boom")
	failing := &fakeDiscoverer{name: "bad", run: func(context.Context, Self, func([]string)) error { return errBoom }}
	d := Multi(failing, Static("10.0.0.1"))
	d.(multi)[1].(*static).every = 5 * time.Millisecond
	var rec recorder
	stop := runAsync(t, d, Self{}, rec.found)
	waitFor(t, 5*time.Second, "repeated static reports", func() bool { return rec.count() >= 3 })
	err := stop()
	if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "bad: boom") {
		t.Fatalf("Run = %v, want the failing member's error", err)
	}
}

func TestMultiAllFailReturns(t *testing.T) {
	e1, e2 := errors.New("e1"), errors.New("e2")
	d := Multi(
		&fakeDiscoverer{name: "x", run: func(context.Context, Self, func([]string)) error { return e1 }},
		&fakeDiscoverer{name: "y", run: func(context.Context, Self, func([]string)) error { return e2 }},
	)
	err := d.Run(context.Background(), Self{}, func([]string) {})
	if !errors.Is(err, e1) || !errors.Is(err, e2) {
		t.Fatalf("Run = %v, want both errors", err)
	}
}

func TestMultiPassesSelf(t *testing.T) {
	want := Self{NodeID: "n1", Addr: "127.0.0.1:1", Environment: "test"}
	var got atomic.Value
	d := Multi(&fakeDiscoverer{name: "x", run: func(ctx context.Context, self Self, _ func([]string)) error {
		got.Store(self)
		return nil
	}}, Static())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := d.Run(ctx, want, func([]string) {}); err != nil {
		t.Fatal(err)
	}
	if got.Load() != want {
		t.Errorf("member got %+v", got.Load())
	}
}

// TestRunReturnsAndNoLeaks starts and stops every host-safe discoverer many
// times and checks that Run returns, found is not called afterwards and no
// goroutine is left behind.
func TestRunReturnsAndNoLeaks(t *testing.T) {
	checkGoroutines(t)
	slowLookup := func(ctx context.Context, host string) ([]string, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
			return []string{"10.0.0.9"}, nil
		}
	}
	makers := map[string]func() Discoverer{
		"static": func() Discoverer { return Static("10.0.0.1") },
		"dns":    func() Discoverer { return DNS("svc", 0, WithResolver(slowLookup), WithInterval(time.Millisecond)) },
		"multi": func() Discoverer {
			s, err := ParseSeeds("10.0.0.1 dns:a dns:b:7000", WithResolver(slowLookup), WithInterval(time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"empty multi": func() Discoverer { return Multi() },
	}
	for name, mk := range makers {
		t.Run(name, func(t *testing.T) {
			for range 20 {
				var returned atomic.Bool
				found := func([]string) {
					if returned.Load() {
						t.Error("found called after Run returned")
					}
				}
				stop := runAsync(t, mk(), Self{}, found)
				time.Sleep(2 * time.Millisecond)
				err := stop()
				returned.Store(true)
				if err != nil {
					t.Fatalf("Run = %v", err)
				}
			}
		})
	}
}

func TestRunWithCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// (MDNS is checked inside a network namespace: see TestMDNSHelper.)
	for _, d := range []Discoverer{Static("10.0.0.1"), DNS("svc", 1), Multi(Static("1.2.3.4"), DNS("x", 1))} {
		if err := d.Run(ctx, Self{NodeID: "n", Addr: "10.0.0.1:1"}, func([]string) {}); err != nil {
			t.Errorf("%s: Run = %v", d, err)
		}
	}
}
