package responder

import (
	"context"
	"errors"
	"os"
	"runtime"
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

// Workers are reused while requests keep coming, and retire after being
// idle for a while; Close leaves none behind.
func TestWorkersAreReusedThenRetire(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	r, err := New("echo", WithMesh(nodes[1]), WithDrainGrace(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r.idleFor = 500 * time.Millisecond
	var peak, running atomic.Int64
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
			<-release
		}
		return nil, nil
	})
	req, err := requester.New("client", requester.WithMesh(nodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer req.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Eight concurrent slow requests need eight workers.
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
	deadline = time.Now().Add(5 * time.Second)
	for idle() != 8 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := idle(); n != 8 {
		t.Fatalf("%d idle workers after 8 concurrent requests, want 8", n)
	}
	// Sequential requests reuse one warm worker: the pool does not grow.
	for range 20 {
		if err := req.Send(ctx, "echo", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	// (The last one's worker goes idle just after its reply is sent.)
	deadline = time.Now().Add(5 * time.Second)
	for idle() != 8 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := idle(); n != 8 {
		t.Fatalf("%d idle workers after sequential requests, want 8", n)
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

// A job is allocated for every request: its size is kept to the 208-byte
// size class of the Go allocator (the next classes are 224, 240 and 256).
func TestJobSize(t *testing.T) {
	if n := unsafe.Sizeof(job{}); n > 208 {
		t.Fatalf("a job takes %d bytes: more than the 208-byte size class", n)
	}
}
