package discovery

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder collects found calls.
type recorder struct {
	mu    sync.Mutex
	calls [][]string
	at    []time.Time
}

func (r *recorder) found(addrs []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, slices.Clone(addrs))
	r.at = append(r.at, time.Now())
}

func (r *recorder) snapshot() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// waitFor polls cond until it holds or the timeout expires.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runAsync starts d.Run and returns a function that cancels it and returns
// its error, failing the test if Run does not return promptly.
func runAsync(t *testing.T, d Discoverer, self Self, found func([]string)) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, self, found) }()
	return func() error {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Run did not return after cancel", d)
			return nil
		}
	}
}

// checkGoroutines records the goroutine count and, at cleanup, polls until
// it is back to that level.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d goroutines, %d before\n%s", n, before, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// fakeDiscoverer runs fn.
type fakeDiscoverer struct {
	name string
	run  func(ctx context.Context, self Self, found func([]string)) error
}

func (f *fakeDiscoverer) String() string { return f.name }
func (f *fakeDiscoverer) Run(ctx context.Context, self Self, found func([]string)) error {
	return f.run(ctx, self, found)
}
