package requester

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/responder"
)

// watchState reports how many contexts r watches and how many calls they
// hold.
func watchState(r *Requester) (watches, calls int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.watches {
		watches++
		calls += w.n
		k := 0
		for c := w.head; c != nil; c = c.wnext {
			k++
		}
		if k != w.n {
			panic(fmt.Sprintf("watch lists %d calls and counts %d", k, w.n))
		}
	}
	return watches, calls
}

// blockCounts counts the "block" handlers of watchCluster that started,
// and those that saw their context cancelled.
type blockCounts struct{ started, cancelled atomic.Int64 }

// noWatches fails the test unless r watches nothing (when says at what
// point of the test).
func noWatches(t *testing.T, r *Requester, when string) {
	t.Helper()
	if w, calls := watchState(r); w != 0 || calls != 0 {
		t.Fatalf("%s: %d watches holding %d calls, want none", when, w, calls)
	}
}

// watchCluster is a requester on one node and, unless noResponder, a
// responder on another whose "block" handler waits for its context and
// whose "echo" handler answers.
func watchCluster(t *testing.T, noResponder bool) (*Requester, *blockCounts) {
	t.Helper()
	nodes := meshtest.Cluster(t, 2)
	var counts blockCounts
	if !noResponder {
		resp, err := responder.New("svc", responder.WithMesh(nodes[1]), responder.WithDrainGrace(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp.Close(ctx)
		})
		resp.On("block", func(ctx context.Context, _ *responder.Request) (any, error) {
			counts.started.Add(1)
			<-ctx.Done()
			counts.cancelled.Add(1)
			return nil, ctx.Err()
		})
		resp.On("echo", func(_ context.Context, q *responder.Request) (any, error) {
			var n int
			err := q.Decode(&n)
			return n, err
		})
	}
	req, err := New("client", WithMesh(nodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req.Close(ctx)
	})
	if !noResponder {
		meshtest.Eventually(t, 10*time.Second, func() error {
			for _, c := range nodes[0].Catalogue() {
				if c.Kind == mesh.KindResponder && c.State == mesh.StateActive {
					return nil
				}
			}
			return errors.New("no responder in the catalogue yet")
		})
	}
	return req, &counts
}

// sendBlocked sends n "block" requests on ctx, each from its own goroutine,
// and waits until their n handlers run; each Send's error goes to the
// channel returned.
func sendBlocked(t *testing.T, req *Requester, counts *blockCounts, ctx context.Context, n int) <-chan error {
	t.Helper()
	errs := make(chan error, n)
	for range n {
		go func() { errs <- req.Send(ctx, "block", nil, nil) }()
	}
	meshtest.Eventually(t, 10*time.Second, func() error {
		if got := counts.started.Load(); got != int64(n) {
			return fmt.Errorf("%d handlers running, want %d", got, n)
		}
		return nil
	})
	return errs
}

// collect waits for n results on errs, failing the test after timeout.
func collect(t *testing.T, errs <-chan error, n int, timeout time.Duration) []error {
	t.Helper()
	var out []error
	deadline := time.After(timeout)
	for range n {
		select {
		case err := <-errs:
			out = append(out, err)
		case <-deadline:
			t.Fatalf("%d of %d calls returned within %s", len(out), n, timeout)
		}
	}
	return out
}

// Many calls in flight on one context share a single watch, and when it is
// cancelled every call returns context.Canceled promptly, every handler's
// context is cancelled, and nothing is left in the requester's tables.
func TestSharedContextIsWatchedOnce(t *testing.T) {
	meshtest.CheckGoroutines(t)
	const n = 40
	req, counts := watchCluster(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := sendBlocked(t, req, counts, ctx, n)
	// The first call of a context waits on it itself; the next ones find it
	// shared and are watched.
	if w, calls := watchState(req); w != 1 || calls < n-1 {
		t.Fatalf("%d watches holding %d calls; want 1 holding at least %d", w, calls, n-1)
	}
	cancel()
	for _, err := range collect(t, errs, n, 5*time.Second) {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: %v, want context.Canceled", err)
		}
	}
	noWatches(t, req, "after the context ended")
	st := req.Stats()
	if st.InFlight != 0 || st.Held != 0 || st.Failed != n {
		t.Fatalf("stats %+v: want nothing in flight or held and %d failed", st, n)
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if got := counts.cancelled.Load(); got != n {
			return fmt.Errorf("%d handlers saw their context cancelled, want %d", got, n)
		}
		return nil
	})
}

// Held calls on one context with a deadline time out together, counted
// once each, and say they were held.
func TestSharedDeadlineEndsHeldCalls(t *testing.T) {
	meshtest.CheckGoroutines(t)
	const n = 30
	req, _ := watchCluster(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	errs := make(chan error, n)
	for range n {
		go func() { errs <- req.Send(ctx, "nobody", nil, nil) }()
	}
	for _, err := range collect(t, errs, n, 5*time.Second) {
		if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("held call: %v, want ErrTimeout and context.DeadlineExceeded", err)
		}
	}
	st := req.Stats()
	if st.Held != 0 || st.TimedOut != n || st.Failed != n || st.Sent != 0 {
		t.Fatalf("stats %+v: want none held or sent, %d timed out and failed", st, n)
	}
	noWatches(t, req, "after the deadline")
}

// A context per call, the usual case, never costs a watch.
func TestPerCallContextsAreNotWatched(t *testing.T) {
	meshtest.CheckGoroutines(t)
	req, _ := watchCluster(t, false)
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := Call[int](ctx, req, "echo", i)
		cancel()
		if err != nil || got != i {
			t.Fatalf("echo %d: %d, %v", i, got, err)
		}
		if w, _ := watchState(req); w != 0 {
			t.Fatalf("%d watches after call %d with its own context, want none", w, i)
		}
	}
}

// However many contexts are shared at once, at most maxWatches are watched;
// the calls of the others wait on their context themselves, and all end
// with their context.
func TestWatchesAreBounded(t *testing.T) {
	meshtest.CheckGoroutines(t)
	const contexts, per = 3 * maxWatches, 3
	req, _ := watchCluster(t, false)
	errs := make(chan error, contexts*per)
	var cancels []context.CancelFunc
	for range contexts {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		var wg sync.WaitGroup
		for range per {
			wg.Add(1)
			go func() {
				wg.Done()
				errs <- req.Send(ctx, "block", nil, nil)
			}()
		}
		wg.Wait()
		if w, _ := watchState(req); w > maxWatches {
			t.Fatalf("%d watches, want at most %d", w, maxWatches)
		}
	}
	meshtest.Eventually(t, 10*time.Second, func() error {
		if st := req.Stats(); st.InFlight != contexts*per {
			return fmt.Errorf("%d in flight, want %d", st.InFlight, contexts*per)
		}
		return nil
	})
	if w, _ := watchState(req); w > maxWatches {
		t.Fatalf("%d watches, want at most %d", w, maxWatches)
	}
	for _, cancel := range cancels {
		cancel()
	}
	for _, err := range collect(t, errs, contexts*per, 5*time.Second) {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: %v, want context.Canceled", err)
		}
	}
	noWatches(t, req, "after every context ended")
	if st := req.Stats(); st.InFlight != 0 || st.Held != 0 {
		t.Fatalf("stats %+v: want nothing in flight or held", st)
	}
}

// A shared context that ends while its callers keep sending, at any point
// of their calls (before, during and after their dispatch), ends every call:
// none waits for a reply that will not come, and the tables end empty.
func TestSharedContextEndsMidStream(t *testing.T) {
	meshtest.CheckGoroutines(t)
	const callers, rounds = 16, 10
	req, _ := watchCluster(t, false)
	for round := range rounds {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var answered, ended atomic.Int64
		for i := range callers {
			wg.Go(func() {
				for k := 0; k < 10000; k++ {
					got, err := Call[int](ctx, req, "echo", i)
					switch {
					case err == nil && got == i:
						answered.Add(1)
					case errors.Is(err, context.Canceled):
						ended.Add(1)
						return
					default:
						t.Errorf("caller %d: %d, %v", i, got, err)
						return
					}
				}
			})
		}
		time.Sleep(time.Duration(5+round*3) * time.Millisecond)
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: callers still waiting 10 s after their context ended (%d ended)", round, ended.Load())
		}
		if answered.Load() == 0 {
			t.Fatalf("round %d: no call answered before the context ended", round)
		}
		meshtest.Eventually(t, 5*time.Second, func() error {
			if st := req.Stats(); st.InFlight != 0 || st.Held != 0 {
				return fmt.Errorf("round %d: %d in flight, %d held; want none", round, st.InFlight, st.Held)
			}
			if w, calls := watchState(req); w != 0 || calls != 0 {
				return fmt.Errorf("round %d: %d watches holding %d calls, want none", round, w, calls)
			}
			return nil
		})
	}
}

// Close fails the calls that watches still hold and drops the watches.
func TestCloseEndsWatchedCalls(t *testing.T) {
	meshtest.CheckGoroutines(t)
	const n = 10
	req, counts := watchCluster(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := sendBlocked(t, req, counts, ctx, n)
	cctx, ccancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer ccancel()
	req.Close(cctx) // gives up waiting for the replies after 50 ms
	for _, err := range collect(t, errs, n, 5*time.Second) {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("call in flight at Close: %v, want ErrClosed", err)
		}
	}
	noWatches(t, req, "after Close")
}

// pastDeadline is a context whose deadline has passed but whose Done
// channel is not closed yet, as for a moment after any deadline.
type pastDeadline struct{ context.Context }

func (pastDeadline) Deadline() (time.Time, bool) { return time.Now().Add(-time.Second), true }

// A watched call can be between two states when its context ends: here
// its deadline has passed as it is about to be written, so it is written
// to no one and is in no table, waiting for its context's end. The watch
// still ends it.
func TestWatchEndsCallsBetweenStates(t *testing.T) {
	meshtest.CheckGoroutines(t)
	const n = 3
	req, _ := watchCluster(t, false)
	inner, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx := pastDeadline{inner}
	errs := make(chan error, n)
	for range n {
		go func() { errs <- req.Send(ctx, "echo", 1, nil) }()
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if w, calls := watchState(req); w != 1 || calls != n-1 {
			return fmt.Errorf("%d watches holding %d calls, want 1 holding %d", w, calls, n-1)
		}
		return nil
	})
	select {
	case err := <-errs:
		t.Fatalf("a call returned before its context ended: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if st := req.Stats(); st.Sent != 0 || st.InFlight != 0 {
		t.Fatalf("stats %+v: want nothing sent or in flight", st)
	}
	cancel()
	for _, err := range collect(t, errs, n, 5*time.Second) {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("call: %v, want context.Canceled", err)
		}
	}
	noWatches(t, req, "after the context ended")
}

// Go's calls share watches too: held on one context, they register no
// function of their own on it, and all end with it, each counted once.
func TestGoCallsShareTheWatch(t *testing.T) {
	meshtest.CheckGoroutines(t)
	const n = 20
	req, _ := watchCluster(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls []*Pending
	for range n {
		calls = append(calls, req.Go(ctx, "nobody", nil, nil))
	}
	if w, watched := watchState(req); w != 1 || watched != n-1 {
		t.Fatalf("%d watches holding %d calls, want 1 holding %d", w, watched, n-1)
	}
	for i, cl := range calls[1:] {
		cl.mu.Lock()
		registered := cl.stop != nil
		cl.mu.Unlock()
		if registered {
			t.Fatalf("watched call %d registered a function on its context", i+1)
		}
	}
	cancel()
	for i, cl := range calls {
		select {
		case <-cl.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d still waits 5 s after its context ended", i)
		}
		if err := cl.Wait(); !errors.Is(err, context.Canceled) {
			t.Fatalf("call %d: %v, want context.Canceled", i, err)
		}
	}
	if st := req.Stats(); st.Held != 0 || st.Failed != n {
		t.Fatalf("stats %+v: want none held and %d failed", st, n)
	}
	noWatches(t, req, "after the context ended")
}
