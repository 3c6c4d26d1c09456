package requester_test

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
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
)

// stuckNode starts a node whose "work" handler blocks until released,
// returning the node and a function that kills it abruptly (its replies are
// never sent).
func stuckNode(t *testing.T, seed string, started chan<- struct{}) (*mesh.Node, func()) {
	n, err := mesh.New(append(meshtest.Options(t), mesh.WithSeeds(seed))...)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := responder.New("stuck", responder.WithMesh(n))
	release := make(chan struct{})
	r.On("work", func(ctx context.Context, _ *responder.Request) (any, error) {
		started <- struct{}{}
		<-release
		return "from the dead", nil
	})
	var once sync.Once
	kill := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			n.Close(ctx) // drops the responder mid-request: its reply is never sent
			close(release)
		})
	}
	t.Cleanup(kill)
	return n, kill
}

func TestInFlightRequestsOnALostResponderFailPromptly(t *testing.T) {
	nodes := meshtest.Cluster(t, 1)
	started := make(chan struct{}, 10)
	_, kill := stuckNode(t, nodes[0].Addr(), started)
	req := newRequester(t, nodes[0])
	waitHandlers(t, nodes[0], "work", 1)
	errc := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() { errc <- req.Send(context.Background(), "work", nil, nil) }()
	}
	for i := 0; i < 3; i++ {
		<-started
	}
	kill()
	for i := 0; i < 3; i++ {
		select {
		case err := <-errc:
			if !errors.Is(err, requester.ErrResponderLost) || !requester.Retryable(err) {
				t.Fatalf("err = %v, want ErrResponderLost", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("request on a dead responder never ended (cote's bug)")
		}
	}
}

func TestIdempotentRequestsMoveToAnotherResponder(t *testing.T) {
	for _, mode := range []string{"idempotent", "retry"} {
		t.Run(mode, func(t *testing.T) {
			nodes := meshtest.Cluster(t, 1)
			started := make(chan struct{}, 10)
			_, kill := stuckNode(t, nodes[0].Addr(), started)
			opts := []requester.Option{}
			var callOpts []requester.CallOption
			if mode == "retry" {
				opts = append(opts, requester.WithRetry(2))
			} else {
				callOpts = append(callOpts, requester.Idempotent())
			}
			req := newRequester(t, nodes[0], opts...)
			waitHandlers(t, nodes[0], "work", 1)
			type res struct {
				s   string
				err error
			}
			out := make(chan res, 3)
			for i := 0; i < 3; i++ {
				go func() {
					s, err := requester.Call[string](ctxT(t, 20*time.Second), req, "work", nil, callOpts...)
					out <- res{s, err}
				}()
			}
			for i := 0; i < 3; i++ {
				<-started
			}
			// A healthy responder appears and the stuck one dies.
			healthy := newResponder(t, nodes[0], "healthy")
			var answered atomic.Int64
			healthy.On("work", func(context.Context, *responder.Request) (any, error) {
				answered.Add(1)
				return "healthy", nil
			})
			waitHandlers(t, nodes[0], "work", 2)
			kill()
			for i := 0; i < 3; i++ {
				r := <-out
				if r.err != nil || r.s != "healthy" {
					t.Fatalf("retried request: %q %v", r.s, r.err)
				}
			}
			if answered.Load() != 3 {
				t.Fatalf("healthy responder answered %d, want exactly 3", answered.Load())
			}
			if st := req.Stats(); st.Retried != 3 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestRollingRestartWithDrainLosesNothing(t *testing.T) {
	seed := meshtest.Node(t)
	type svc struct {
		node *mesh.Node
		r    *responder.Responder
	}
	start := func() svc {
		n, err := mesh.New(append(meshtest.Options(t), mesh.WithSeeds(seed.Addr()))...)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := responder.New("v", responder.WithMesh(n), responder.WithDrainGrace(100*time.Millisecond))
		responder.Handle(r, "echo", func(_ context.Context, v int) (int, error) {
			time.Sleep(time.Millisecond)
			return v, nil
		})
		return svc{n, r}
	}
	stop := func(s svc) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.r.Close(ctx); err != nil {
			t.Errorf("drain: %v", err)
		}
		if err := s.node.Close(ctx); err != nil {
			t.Errorf("node close: %v", err)
		}
	}
	svcs := []svc{start(), start(), start()}
	defer func() {
		for _, s := range svcs {
			stop(s)
		}
	}()
	req := newRequester(t, seed) // no retry: drain alone must lose nothing
	waitHandlers(t, seed, "echo", 3)
	ctx, cancel := context.WithCancel(context.Background())
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 100000; i++ {
				rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
				got, err := requester.Call[int](rctx, req, "echo", g*1e6+i)
				rcancel()
				sent.Add(1)
				if err != nil || got != g*1e6+i {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("%d: %d %v", g*1e6+i, got, err))
				}
			}
		}(g)
	}
	for i := range svcs {
		time.Sleep(150 * time.Millisecond)
		stop(svcs[i])
		svcs[i] = start()
	}
	time.Sleep(150 * time.Millisecond)
	cancel()
	wg.Wait()
	st := req.Stats()
	t.Logf("rolling restart: %d requests, %d failed, %d resent after refusal", sent.Load(), failed.Load(), st.Rejected)
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during a graceful rolling restart; first: %v", failed.Load(), sent.Load(), firstErr.Load())
	}
	if sent.Load() < 100 {
		t.Fatalf("only %d requests went through", sent.Load())
	}
}

func TestStoppedServiceMakesRequestsWaitThenComplete(t *testing.T) {
	nodes := meshtest.Cluster(t, 1)
	req := newRequester(t, nodes[0])
	n2, err := mesh.New(append(meshtest.Options(t), mesh.WithSeeds(nodes[0].Addr()))...)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := validator(t, n2)
	ctx := ctxT(t, 20*time.Second)
	if _, err := requester.Call[verdict](ctx, req, "validate", card{"123456"}); err != nil {
		t.Fatal(err)
	}
	r.Close(ctx)
	n2.Close(ctx)
	meshtest.Eventually(t, 5*time.Second, func() error {
		if len(nodes[0].Catalogue()) != 1 { // only the requester remains
			return fmt.Errorf("%d components", len(nodes[0].Catalogue()))
		}
		return nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := requester.Call[verdict](ctx, req, "validate", card{"123456"})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("request did not wait: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	n3 := meshtest.Node(t, mesh.WithSeeds(nodes[0].Addr()))
	validator(t, n3)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNodeCloseClosesItsComponents(t *testing.T) {
	meshtest.CheckGoroutines(t)
	n, err := mesh.New(meshtest.Options(t)...)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := requester.New("c", requester.WithMesh(n))
	errc := make(chan error, 1)
	go func() { errc <- req.Send(context.Background(), "validate", nil, nil) }()
	meshtest.Eventually(t, 5*time.Second, func() error {
		if req.Stats().Held != 1 {
			return errors.New("not held")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, requester.ErrClosed) {
			t.Fatalf("held request after its node closed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held request still waiting after its node closed")
	}
	if err := req.Send(context.Background(), "validate", nil, nil); !errors.Is(err, requester.ErrClosed) {
		t.Fatalf("Send after the node closed: %v", err)
	}
}

func TestConcurrentClosesLeaveNoStaleResponder(t *testing.T) {
	// Several responders' nodes closing at the same moment: their leave
	// gossip may be lost, but the goodbye on the data connection takes them
	// out of rotation at once.
	seed := meshtest.Node(t)
	req := newRequester(t, seed)
	var nodes []*mesh.Node
	for i := 0; i < 3; i++ {
		n, err := mesh.New(append(meshtest.Options(t), mesh.WithSeeds(seed.Addr()))...)
		if err != nil {
			t.Fatal(err)
		}
		validator(t, n)
		nodes = append(nodes, n)
	}
	waitHandlers(t, seed, "validate", 3)
	ctx := ctxT(t, 20*time.Second)
	for i := 0; i < 6; i++ { // a connection to each
		if _, err := requester.Call[verdict](ctx, req, "validate", card{"123456"}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Close(ctx) }()
	}
	wg.Wait()
	meshtest.Eventually(t, 2*time.Second, func() error {
		for _, c := range seed.Catalogue() {
			if c.Kind == mesh.KindResponder {
				return fmt.Errorf("closed responder still listed: %s", c)
			}
		}
		return nil
	})
}
