package responder

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/requester"
)

func TestMain(m *testing.M) {
	meshtest.SafeEnv()
	os.Exit(m.Run())
}

func TestJobCtxCancel(t *testing.T) {
	var c jobCtx
	if _, ok := c.Deadline(); ok {
		t.Fatal("deadline without one set")
	}
	if c.Err() != nil {
		t.Fatal("Err before cancel")
	}
	done := c.Done()
	if done != c.Done() {
		t.Fatal("Done returns another channel on each call")
	}
	c.cancel(context.Canceled)
	c.cancel(context.DeadlineExceeded) // the first cancel wins
	select {
	case <-done:
	default:
		t.Fatal("Done not closed by cancel")
	}
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("Err = %v", c.Err())
	}
	// Done asked for the first time after cancel is closed too.
	var c2 jobCtx
	c2.cancel(context.Canceled)
	select {
	case <-c2.Done():
	default:
		t.Fatal("Done made after cancel is open")
	}
}

func TestJobCtxDeadline(t *testing.T) {
	// Err sees a passed deadline with no timer.
	c := jobCtx{deadline: time.Now().Add(-time.Millisecond)}
	if !errors.Is(c.Err(), context.DeadlineExceeded) || c.more != nil {
		t.Fatalf("Err = %v, watch %v", c.Err(), c.more)
	}
	// Done arms a timer that closes it at the deadline.
	c2 := jobCtx{deadline: time.Now().Add(20 * time.Millisecond)}
	if dl, ok := c2.Deadline(); !ok || !dl.Equal(c2.deadline) {
		t.Fatal("Deadline not reported")
	}
	select {
	case <-c2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed at the deadline")
	}
	if !errors.Is(c2.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v", c2.Err())
	}
	// A context that ends before its deadline stops its timer.
	c3 := jobCtx{deadline: time.Now().Add(time.Hour)}
	c3.Done()
	c3.cancel(context.Canceled)
	if c3.more.timer.Stop() {
		t.Fatal("timer still armed after cancel")
	}
}

// Contexts derived from a handler's context follow it through AfterFunc,
// with no goroutine each.
func TestJobCtxDerivedContexts(t *testing.T) {
	var c jobCtx
	before := runtime.NumGoroutine()
	var children []context.Context
	var cancels []context.CancelFunc
	for range 100 {
		ctx, cancel := context.WithTimeout(&c, time.Hour)
		children = append(children, ctx)
		cancels = append(cancels, cancel)
	}
	if g := runtime.NumGoroutine(); g > before+2 {
		t.Fatalf("%d goroutines for 100 derived contexts (%d before)", g, before)
	}
	cancels[0]() // a child cancelled on its own unregisters itself
	c.mu.Lock()
	n := len(c.more.funcs)
	c.mu.Unlock()
	if n != 99 {
		t.Fatalf("%d functions registered after a child was cancelled, want 99", n)
	}
	c.cancel(context.Canceled)
	for i, ctx := range children {
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("child %d not cancelled with its parent", i)
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("child %d: Err = %v", i, ctx.Err())
		}
	}
	for _, cancel := range cancels {
		cancel()
	}
	// A context derived after the parent ended is done at once.
	late, cancel := context.WithCancel(&c)
	defer cancel()
	select {
	case <-late.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context derived from a done context is not done")
	}
	// context.AfterFunc works, and its stop reports whether it ran.
	var c2 jobCtx
	ran := make(chan struct{})
	context.AfterFunc(&c2, func() { close(ran) })
	stop := context.AfterFunc(&c2, func() { t.Error("stopped AfterFunc ran") })
	if !stop() {
		t.Fatal("stop did not unregister")
	}
	c2.cancel(context.Canceled)
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc did not run")
	}
}

// A context that is cancelled while another goroutine first asks for its
// Done channel or registers a function ends exactly once either way: its
// channel is closed and the function runs once (cancel takes no lock when
// nobody watched).
func TestJobCtxWatchRacesCancel(t *testing.T) {
	for i := range 2000 {
		var c jobCtx
		var ran atomic.Int32
		var done <-chan struct{}
		start := make(chan struct{})
		watched := make(chan struct{})
		go func() {
			<-start
			if i%2 == 0 {
				done = c.Done()
			} else {
				context.AfterFunc(&c, func() { ran.Add(1) })
			}
			close(watched)
		}()
		close(start)
		c.cancel(context.Canceled)
		<-watched
		if i%2 == 0 {
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: Done not closed after cancel", i)
			}
			continue
		}
		deadline := time.Now().Add(5 * time.Second)
		for ran.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Microsecond)
		}
		time.Sleep(100 * time.Microsecond) // room for a second, wrong run
		if n := ran.Load(); n != 1 {
			t.Fatalf("round %d: AfterFunc ran %d times", i, n)
		}
	}
}

// The running jobs are found by key for cancellations: by walking their
// list while few run, through an index once many do. The index follows
// additions and removals, and is dropped when none runs.
func TestRunningJobsFoundByKey(t *testing.T) {
	r := &Responder{}
	var jobs []*job
	add := func(n int) {
		for range n {
			j := &job{key: reqKey{node: "n" + string(rune('a'+len(jobs)%3)), from: 7, seq: uint64(len(jobs))}}
			jobs = append(jobs, j)
			r.addLocked(j)
		}
	}
	check := func(stage string, gone map[int]bool) {
		t.Helper()
		for i, j := range jobs {
			got := r.findLocked(j.key)
			if gone[i] && got != nil {
				t.Fatalf("%s: removed job %d still found", stage, i)
			}
			if !gone[i] && got != j {
				t.Fatalf("%s: job %d not found (got %v)", stage, i, got)
			}
		}
		if r.findLocked(reqKey{node: "other", from: 7, seq: 1}) != nil {
			t.Fatalf("%s: a key never added was found", stage)
		}
	}
	add(indexAbove)
	check("few", nil)
	if r.index != nil {
		t.Fatal("indexed with only a few jobs running")
	}
	add(3 * indexAbove)
	check("many", nil)
	if r.index == nil {
		t.Fatal("not indexed with many jobs running")
	}
	gone := map[int]bool{}
	for i := 0; i < len(jobs); i += 3 { // from the middle, the head and the tail
		r.removeLocked(jobs[i])
		gone[i] = true
	}
	if last := len(jobs) - 1; !gone[last] {
		r.removeLocked(jobs[last])
		gone[last] = true
	}
	add(5) // added while indexed
	check("after removals", gone)
	if want := len(jobs) - len(gone); r.nrunning != want {
		t.Fatalf("%d running, want %d", r.nrunning, want)
	}
	n := 0
	for j := r.runHead; j != nil; j = j.next {
		n++
	}
	if n != r.nrunning {
		t.Fatalf("list holds %d jobs, count says %d", n, r.nrunning)
	}
	for i, j := range jobs {
		if !gone[i] {
			r.removeLocked(j)
		}
	}
	if r.nrunning != 0 || r.runHead != nil || r.index != nil {
		t.Fatalf("after removing all: %d running, head %v, index %v", r.nrunning, r.runHead, r.index)
	}
}

// Workers are reused while requests keep coming, and retire after being
// idle for a while; Close leaves none behind.
func TestWorkersAreReusedThenRetire(t *testing.T) {
	r, req, ctx := pair(t, "echo")
	r.idleFor = 500 * time.Millisecond
	var peak, running, lent atomic.Int64
	release := make(chan struct{})
	r.On("echo", func(ctx context.Context, req *Request) (any, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if req.Type == "echo" && len(req.Payload()) > 1 {
			buf := make([]byte, 64<<10)
			if strings.Contains(string(buf[:runtime.Stack(buf, false)]), "serveLent") {
				lent.Add(1) // on the read loop that read it, not a worker
			}
			<-release
		}
		return nil, nil
	})
	// Eight concurrent slow requests need eight workers, or seven when the
	// first, arriving alone to an idle responder, runs on the read loop
	// that read it (the mesh moves the reading elsewhere).
	var ps []*requester.Pending
	for range 8 {
		ps = append(ps, req.Go(ctx, "echo", "slow", nil))
	}
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < 8 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	for _, p := range ps {
		if err := p.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	idle := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.idleW)
	}
	want := 8 - int(lent.Load())
	if want < 7 {
		t.Fatalf("%d of 8 concurrent requests ran on a read loop; at most the first may", 8-want)
	}
	deadline = time.Now().Add(5 * time.Second)
	for idle() != want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := idle(); n != want {
		t.Fatalf("%d idle workers after 8 concurrent requests, want %d", n, want)
	}
	// Sequential requests reuse one warm worker: the pool does not grow.
	for range 20 {
		if err := req.Send(ctx, "echo", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	// (The last one's worker goes idle just after its reply is sent.)
	deadline = time.Now().Add(5 * time.Second)
	for idle() != want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := idle(); n != want {
		t.Fatalf("%d idle workers after sequential requests, want %d", n, want)
	}
	// Then they retire.
	deadline = time.Now().Add(5 * time.Second)
	for idle() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := idle(); n != 0 {
		t.Fatalf("%d workers still idle after %v", n, r.idleFor)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// What is allocated for every request stays in small size classes of the
// Go allocator: a context (handlers made by Handle; 32 at a time), or a
// context with the request and a small payload (handlers registered with
// On). Jobs are reused.
func TestPerRequestAllocationSizes(t *testing.T) {
	if n := unsafe.Sizeof(jobCtx{}); n > 64 {
		t.Errorf("a jobCtx takes %d bytes: more than the 64-byte size class", n)
	}
	if n := unsafe.Sizeof(kept{}); n > 144 {
		t.Errorf("a kept takes %d bytes: more than the 144-byte size class", n)
	}
}
