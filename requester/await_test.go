package requester_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
)

// These tests cover the two ways a connection's read loop shares its work
// (mesh/lend.go): a responder with nothing else to do runs a handler on the
// goroutine that read its request (a lent read loop), and a caller with the
// only request in flight reads its reply itself (mesh.Port.Await).

// stacksContain reports whether some goroutine's stack names fn.
func stacksContain(fn string) bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn)
}

// onReadLoop reports whether the calling goroutine was a read loop.
func onReadLoop() bool {
	buf := make([]byte, 64<<10)
	return strings.Contains(string(buf[:runtime.Stack(buf, false)]), "mesh.(*Node).readLoop")
}

// One request at a time, many times: each reply is read by its caller once
// the read loop has given the reading away, and each request is served on
// the responder's lent read loop. Every reply must still come, to the
// right caller, whatever the context: one per call (unwatched), one shared
// by the calls (watched by the requester), or none.
func TestSequentialSendsAreAnswered(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	validator(t, nodes[1])
	req := newRequester(t, nodes[0])
	ctx := ctxT(t, 30*time.Second)
	for i := range 2000 {
		var v verdict
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := req.Send(cctx, "validate", card{Number: "4242424242"}, &v)
		cancel()
		if err != nil || v.Status != "validated" {
			t.Fatalf("request %d: %v %+v", i, err, v)
		}
	}
	for _, ctx := range []context.Context{ctx, context.Background()} {
		for i := range 2000 {
			v, err := requester.Call[verdict](ctx, req, "validate", card{Number: "4242424242"})
			if err != nil || v.Status != "validated" {
				t.Fatalf("request %d: %v %+v", i, err, v)
			}
		}
	}
}

// A handler that blocks on a lent read loop does not block its
// connection: another goroutine carries on reading, so a second request on
// the same connection is served (here it is what unblocks the first). The
// next requests go to workers for a while. After a flow of quick requests
// the mesh's guard looks less often (up to every 32 ms), and still takes
// the reading over.
func TestBlockedHandlerOnALentReadLoopDoesNotBlockItsConnection(t *testing.T) {
	t.Run("fresh", func(t *testing.T) { blockedHandlerOnLentReadLoop(t, 0) })
	t.Run("after a flow of quick requests", func(t *testing.T) { blockedHandlerOnLentReadLoop(t, 200*time.Millisecond) })
}

func blockedHandlerOnLentReadLoop(t *testing.T, flow time.Duration) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	r := newResponder(t, nodes[1], "gate", responder.WithConcurrency(4))
	release := make(chan struct{})
	lent := make(chan struct{}, 1)
	responder.Handle(r, "wait", func(ctx context.Context, _ int) (int, error) {
		if !onReadLoop() {
			return -1, nil // served by a worker: the test tries again
		}
		lent <- struct{}{}
		select {
		case <-release:
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	})
	responder.Handle(r, "open", func(ctx context.Context, _ int) (bool, error) {
		close(release)
		return onReadLoop(), nil
	})
	responder.Handle(r, "where", func(ctx context.Context, _ int) (bool, error) {
		return onReadLoop(), nil
	})
	responder.Handle(r, "quick", func(ctx context.Context, n int) (int, error) { return n, nil })
	req := newRequester(t, nodes[0])
	ctx := ctxT(t, 10*time.Second)
	for end := time.Now().Add(flow); time.Now().Before(end); {
		if _, err := requester.Call[int](ctx, req, "quick", 1); err != nil {
			t.Fatal(err)
		}
	}
	// A handler the scheduler delayed during the flow (or the test's own
	// slow checks) may send a few requests to the workers: try until the
	// blocking request is served on the read loop. A fresh responder lends
	// it the read loop at once.
	var tried atomic.Int32
	waited := make(chan error, 1)
	go func() {
		for range 2000 {
			tried.Add(1)
			v, err := requester.Call[int](ctx, req, "wait", 0)
			if err != nil || v != -1 {
				waited <- err
				return
			}
		}
		waited <- errors.New("never served on the read loop")
	}()
	select {
	case <-lent:
	case err := <-waited:
		t.Fatalf("the blocking request: %v", err)
	}
	if flow == 0 && tried.Load() != 1 {
		t.Fatal("the first request, to an idle responder, was not served on the read loop")
	}
	start := time.Now()
	openedOnLoop, err := requester.Call[bool](ctx, req, "open", 0)
	if err != nil {
		t.Fatalf("the second request, behind a blocked handler: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		// The guard takes over within about 32 ms; a second leaves room
		// for a slow machine, not for a guard that stopped looking.
		t.Errorf("the second request took %v behind the blocked handler", d)
	}
	if openedOnLoop {
		t.Error("the second request was served on a read loop while a handler ran")
	}
	if err := <-waited; err != nil {
		t.Fatalf("the blocked request: %v", err)
	}
	// The slow handler sends the next few requests to the workers.
	for i := range 3 {
		onLoop, err := requester.Call[bool](ctx, req, "where", 0)
		if err != nil {
			t.Fatal(err)
		}
		if onLoop {
			t.Fatalf("request %d after a slow one was served on the read loop", i)
		}
	}
}

// handleHang registers "hang", which answers only when its caller gives up.
func handleHang(r *responder.Responder) {
	responder.Handle(r, "hang", func(ctx context.Context, _ int) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	})
}

// awaitedCall starts call on its own goroutine and reports whether the
// call's goroutine was seen reading its connection (mesh.Port.Await)
// within 200 ms (or before the call returned), and the call's error. The
// caller gets the reading only if the read loop had given it away and not
// taken it back yet, so tests try until it did.
func awaitedCall(t *testing.T, call func() error) (awaited bool, err error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); {
		if stacksContain("mesh.(*Port).Await") {
			awaited = true
			break
		}
		select {
		case err := <-done:
			return false, err
		case <-time.After(time.Millisecond):
		}
	}
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the call did not stop")
	}
	return awaited, err
}

// tries runs attempt until it reports that the caller read its own reply,
// at most 50 times.
func tries(t *testing.T, what string, attempt func() bool) {
	t.Helper()
	for range 50 {
		if attempt() {
			return
		}
	}
	t.Fatalf("%s: no call ever read its own connection", what)
}

// A caller reading its own reply (mesh.Port.Await) still stops when its
// context ends, whether the requester watches that context (shared by
// consecutive calls) or not (one per call); and the requester's Close
// stops it too.
func TestAwaitingCallerStopsWhenItsContextEnds(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	r, _ := validator(t, nodes[1])
	handleHang(r)
	req := newRequester(t, nodes[0])
	quick := func(ctx context.Context, req *requester.Requester) {
		t.Helper()
		if _, err := requester.Call[verdict](ctx, req, "validate", card{"123456"}); err != nil {
			t.Fatal(err)
		}
	}

	// hangs calls "hang" with ctx, which must end with want, and reports
	// whether the call read its own connection.
	hangs := func(ctx context.Context, req *requester.Requester, want error) bool {
		t.Helper()
		awaited, err := awaitedCall(t, func() error {
			_, err := requester.Call[int](ctx, req, "hang", 0)
			return err
		})
		if !errors.Is(err, want) {
			t.Fatalf("got %v, want %v", err, want)
		}
		return awaited
	}

	tries(t, "context of its own", func() bool {
		quick(context.Background(), req) // leaves the reading to the next caller
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		return hangs(ctx, req, requester.ErrTimeout)
	})
	tries(t, "shared context", func() bool {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		quick(ctx, req) // the same context twice in a row: watched from the second call
		time.AfterFunc(50*time.Millisecond, cancel)
		return hangs(ctx, req, context.Canceled)
	})
	tries(t, "requester closed", func() bool {
		req := newRequester(t, nodes[0])
		for range 5 { // calls alone in a row: the next is trusted to be alone too
			quick(context.Background(), req)
		}
		time.AfterFunc(50*time.Millisecond, func() {
			// Close waits for the calls in flight until its context ends,
			// then fails them.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			req.Close(ctx)
		})
		return hangs(context.Background(), req, requester.ErrClosed)
	})
}

// While a caller reads its connection for a slow reply, the other frames
// on it are dispatched too: other calls' replies, and requests from the
// other node to a responder on this one. After the caller leaves, the
// connection is read again: later requests from the other node are
// served.
func TestAwaitingCallerDispatchesEverythingElse(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	r, _ := validator(t, nodes[1])
	handleHang(r)
	responder.Handle(r, "echo", func(ctx context.Context, n int) (int, error) { return n, nil })
	validator(t, nodes[0]) // node 0 serves node 1 too, on the same connection
	req0 := newRequester(t, nodes[0])
	req1 := newRequester(t, nodes[1])
	waitHandlers(t, nodes[0], "hang", 1)
	waitHandlers(t, nodes[1], "validate", 2)
	ctx := ctxT(t, 20*time.Second)
	others := func(what string) {
		t.Helper()
		for i := range 20 {
			if _, err := requester.Call[verdict](ctx, req0, "validate", card{"123456"}); err != nil {
				t.Fatalf("%s: node 0's call %d: %v", what, i, err)
			}
			if _, err := requester.Call[verdict](ctx, req1, "validate", card{"123456"}); err != nil {
				t.Fatalf("%s: node 1's call %d: %v", what, i, err)
			}
		}
	}

	tries(t, "hanging call", func() bool {
		others("before")
		// Two calls to node 1 alone: the first makes node 0's read loop
		// give the reading away after its reply, the second takes it and
		// leaves it to the next caller.
		for range 2 {
			if _, err := requester.Call[int](ctx, req0, "echo", 1); err != nil {
				t.Fatal(err)
			}
		}
		hctx, cancel := context.WithCancel(ctx)
		defer cancel()
		hung := make(chan error, 1)
		go func() {
			_, err := requester.Call[int](hctx, req0, "hang", 0)
			hung <- err
		}()
		awaited := false
		for deadline := time.Now().Add(200 * time.Millisecond); !awaited && time.Now().Before(deadline); {
			awaited = stacksContain("mesh.(*Port).Await")
			time.Sleep(time.Millisecond)
		}
		if awaited {
			others("while node 0 awaits a reply")
		}
		cancel()
		if err := <-hung; !errors.Is(err, context.Canceled) {
			t.Fatalf("hanging call: %v, want context.Canceled", err)
		}
		if awaited {
			// The caller has left the reading free: it must come back to
			// the read loop for node 1's requests.
			for i := range 20 {
				if _, err := requester.Call[verdict](ctx, req1, "validate", card{"123456"}); err != nil {
					t.Fatalf("node 1's call %d after node 0's caller left: %v", i, err)
				}
				time.Sleep(time.Millisecond)
			}
		}
		return awaited
	})
}
