package requester_test

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
)

func TestGoAnswersLikeSend(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	validator(t, nodes[1])
	req := newRequester(t, nodes[0])
	ctx := ctxT(t, 5*time.Second)

	var v verdict
	p := req.Go(ctx, "validate", card{"123456"}, &v)
	select {
	case <-p.Done():
	case <-ctx.Done():
		t.Fatal("call did not complete")
	}
	if err := p.Wait(); err != nil || v.Status != "validated" || v.By != nodes[1].ID() {
		t.Fatalf("Wait = %v, reply %+v", err, v)
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("second Wait = %v", err)
	}

	// A handler error is a RemoteError, as with Send.
	err := req.Go(ctx, "validate", card{"12"}, &v).Wait()
	var re *requester.RemoteError
	if !errors.As(err, &re) || re.Code != "invalid_card" {
		t.Fatalf("err = %v, want a RemoteError with code invalid_card", err)
	}
	// A bad type fails at once, with Done already closed.
	p = req.Go(ctx, "", nil, nil)
	select {
	case <-p.Done():
	default:
		t.Fatal("a call with an empty type is not done at once")
	}
	if err := p.Wait(); !errors.Is(err, requester.ErrInvalidType) {
		t.Fatalf("err = %v, want ErrInvalidType", err)
	}
	st := req.Stats()
	if st.Answered != 2 || st.Failed != 0 {
		t.Fatalf("stats %+v: want 2 answered (a reply and a handler error), none failed (a bad type is refused before it counts, as with Send)", st)
	}
}

// Held calls cost no goroutine each, wait in order for a responder, and
// complete when one appears.
func TestGoHeldWithoutGoroutines(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	req := newRequester(t, nodes[0], requester.WithMaxPending(2000))
	ctx := ctxT(t, 20*time.Second)

	const n = 1000
	before := runtime.NumGoroutine()
	ps := make([]*requester.Pending, n)
	replies := make([]verdict, n)
	for i := range ps {
		ps[i] = req.Go(ctx, "validate", card{"123456"}, &replies[i])
	}
	if held := req.Stats().Held; held != n {
		t.Fatalf("%d held, want %d", held, n)
	}
	if g := runtime.NumGoroutine(); g > before+10 {
		t.Fatalf("%d goroutines while %d calls are held (%d before)", g, n, before)
	}
	validator(t, nodes[1])
	for i, p := range ps {
		if err := p.Wait(); err != nil || replies[i].Status != "validated" {
			t.Fatalf("call %d: %v, reply %+v", i, err, replies[i])
		}
	}
}

func TestGoContextEndsWhileHeld(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	req := newRequester(t, nodes[0])

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	p := req.Go(ctx, "validate", card{"123456"}, nil)
	if err := p.Wait(); !errors.Is(err, requester.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout wrapping DeadlineExceeded", err)
	}

	// The requester's own timeout applies to a ctx without a deadline.
	req2 := newRequester(t, nodes[0], requester.WithTimeout(50*time.Millisecond))
	if err := req2.Go(context.Background(), "validate", card{"123456"}, nil).Wait(); !errors.Is(err, requester.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}

	// A cancelled ctx, even before the call, ends it with ctx's error.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := req.Go(cctx, "validate", card{"123456"}, nil).Wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}

	// None of them reaches a responder that appears later.
	_, count := validator(t, nodes[1])
	if _, err := requester.Call[verdict](ctxT(t, 5*time.Second), req, "validate", card{"123456"}); err != nil {
		t.Fatal(err)
	}
	if got := count.Load(); got != 1 {
		t.Fatalf("responder handled %d requests, want 1 (the withdrawn ones must not arrive)", got)
	}
	if st := req.Stats(); st.Failed != 2 || st.TimedOut != 1 || st.Held != 0 {
		t.Fatalf("stats %+v: want 2 failed, 1 timed out, none held", st)
	}
}

func TestGoCancelInFlightReachesHandler(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	r := newResponder(t, nodes[1], "slow")
	started := make(chan struct{})
	var cancelled atomic.Bool
	r.On("slow", func(ctx context.Context, _ *responder.Request) (any, error) {
		close(started)
		<-ctx.Done()
		cancelled.Store(true)
		return nil, ctx.Err()
	})
	req := newRequester(t, nodes[0])
	waitHandlers(t, nodes[0], "slow", 1)
	ctx, cancel := context.WithCancel(context.Background())
	p := req.Go(ctx, "slow", nil, nil)
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not start")
	}
	cancel()
	if err := p.Wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !cancelled.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the handler's context was not cancelled")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGoCloseFailsHeldCalls(t *testing.T) {
	meshtest.CheckGoroutines(t)
	n := meshtest.Node(t)
	req, err := requester.New("client", requester.WithMesh(n))
	if err != nil {
		t.Fatal(err)
	}
	p := req.Go(context.Background(), "validate", card{"123456"}, nil)
	if err := req.Close(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); !errors.Is(err, requester.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	if err := req.Go(context.Background(), "validate", nil, nil).Wait(); !errors.Is(err, requester.ErrClosed) {
		t.Fatalf("after Close: err = %v, want ErrClosed", err)
	}
}

// A held call costs its payload and a few hundred bytes: no goroutine, no
// stack (issue: memory per held request is small).
func TestGoHeldCallMemory(t *testing.T) {
	n := meshtest.Node(t)
	const k = 10000
	req := newRequester(t, n, requester.WithMaxPending(k))
	data := make([]byte, 16)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ps := make([]*requester.Pending, k)
	for i := range ps {
		ps[i] = req.Go(context.Background(), "validate", data, nil)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / k
	t.Logf("%d bytes of heap per held call (16-byte payload)", per)
	if per > 1200 {
		t.Fatalf("%d bytes of heap per held call, want under 1200", per)
	}
	if st := req.Stats(); st.Held != k {
		t.Fatalf("%d held, want %d", st.Held, k)
	}
	runtime.KeepAlive(ps)
}
