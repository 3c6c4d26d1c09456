package requester

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/responder"
)

// A request that finds no responder, while one appears and the dispatcher
// drains the held queue before the request joins it, is still sent at once:
// it must not wait for the next catalogue change (which may never come).
func TestRequestHeldAsResponderAppearsIsSent(t *testing.T) {
	meshtest.CheckGoroutines(t)
	node := meshtest.Node(t)
	req, err := New("client", WithMesh(node))
	if err != nil {
		t.Fatal(err)
	}
	defer req.Close(context.Background())
	var resp *responder.Responder
	var once sync.Once
	testHookBeforeHold = func() {
		once.Do(func() {
			// Between the caller's look at the catalogue and its joining the
			// held queue: a responder appears, and the dispatcher drains the
			// (empty) queue for the new catalogue meanwhile.
			r, err := responder.New("svc", responder.WithMesh(node))
			if err != nil {
				t.Error(err)
				return
			}
			r.On("echo", func(_ context.Context, q *responder.Request) (any, error) {
				var s string
				err := q.Decode(&s)
				return s, err
			})
			resp = r
			deadline := time.Now().Add(5 * time.Second)
			for len(node.View().Components) < 2 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // the dispatcher drains, then waits
		})
	}
	defer func() { testHookBeforeHold = nil }()
	defer func() {
		if resp != nil {
			resp.Close(context.Background())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	got, err := Call[string](ctx, req, "echo", "hi")
	if err != nil || got != "hi" {
		t.Fatalf("Call = %q, %v after %s; want the reply, sent when the responder appeared", got, err, time.Since(start))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("answered after %s", d)
	}
}

// Close while the dispatcher has the held queue out of r.held (looking at
// each call against a new catalogue) cannot see those calls: the
// dispatcher fails them instead of putting them back, so no held call
// outlives its requester. (CI once saw a held call wait on after its
// node closed.)
func TestCloseDuringRedispatchFailsHeldCalls(t *testing.T) {
	meshtest.CheckGoroutines(t)
	node := meshtest.Node(t)
	req, err := New("client", WithMesh(node))
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	errc := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() { errc <- req.Send(context.Background(), "validate", nil, nil) }()
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if h := req.Stats().Held; h != n {
			return fmt.Errorf("%d held", h)
		}
		return nil
	})
	req.mu.Lock()
	list := req.held // as drainHeld takes it
	req.held = nil
	req.mu.Unlock()
	if err := req.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	req.redispatch(node.View(), list)
	for i := 0; i < n; i++ {
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("held call after Close: %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d held calls still wait after Close", n-i)
		}
	}
	req.mu.Lock()
	defer req.mu.Unlock()
	if len(req.held) != 0 {
		t.Fatalf("%d calls back in the held queue of a closed requester", len(req.held))
	}
}

// A call in flight when Close starts, whose responder's node goes down
// while Close waits for in-flight calls with retries left, goes back to
// the held queue after Close emptied it: it still fails with ErrClosed,
// and Close returns.
func TestCloseFailsCallsRequeuedWhileItWaits(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	release := make(chan struct{})
	resp, err := responder.New("svc", responder.WithMesh(nodes[1]))
	if err != nil {
		t.Fatal(err)
	}
	resp.On("slow", func(ctx context.Context, _ *responder.Request) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	defer resp.Close(context.Background())
	defer close(release)
	req, err := New("client", WithMesh(nodes[0]), WithRetry(1))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		errc <- req.Send(ctx, "slow", nil, nil)
	}()
	meshtest.Eventually(t, 5*time.Second, func() error {
		if s := req.Stats(); s.InFlight != 1 {
			return fmt.Errorf("%d in flight", s.InFlight)
		}
		return nil
	})
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- req.Close(ctx)
	}()
	meshtest.Eventually(t, 5*time.Second, func() error {
		req.mu.Lock()
		defer req.mu.Unlock()
		if !req.closed {
			return errors.New("not closing yet")
		}
		return nil
	})
	(*handler)(req).PeerDown(nodes[1].ID()) // requeues: one retry left
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("requeued call: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("requeued call still waits after Close")
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// A call whose responder is lost while its caller is about to write it is
// sent again by the dispatcher under a new number. The caller's write to
// the lost responder then fails; the caller must see that the call is no
// longer its own (it was sent again), not take the new sending out of
// flight and send the request a third time.
func TestLostWhileWritingIsSentOnce(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 3)
	var mu sync.Mutex
	handled := map[string]int{} // by responder node
	for _, n := range nodes[1:] {
		resp, err := responder.New("svc", responder.WithMesh(n))
		if err != nil {
			t.Fatal(err)
		}
		id := n.ID()
		resp.On("work", func(context.Context, *responder.Request) (any, error) {
			mu.Lock()
			handled[id]++
			mu.Unlock()
			return "ok", nil
		})
	}
	req, err := New("client", WithMesh(nodes[0]), WithRetry(1))
	if err != nil {
		t.Fatal(err)
	}
	defer req.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nodes[0].Await(ctx, func(cs []mesh.Component) bool {
		k := 0
		for _, c := range cs {
			if c.Kind == mesh.KindResponder {
				k++
			}
		}
		return k == 2
	}); err != nil {
		t.Fatal(err)
	}

	var once sync.Once
	var lost string
	testHookSending = func(c *call, seq uint64, node string) {
		once.Do(func() {
			lost = node
			for _, n := range nodes[1:] {
				if n.ID() == node {
					cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
					n.Close(cctx) // the write below fails
					ccancel()
				}
			}
			(*handler)(req).PeerDown(node) // as the mesh reports it, at once
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				req.mu.Lock()
				again := c.seq != seq && c.state == stateSent
				req.mu.Unlock()
				if again {
					return
				}
				time.Sleep(time.Millisecond)
			}
			t.Error("the lost call was not sent again")
		})
	}
	defer func() { testHookSending = nil }()
	got, err := Call[string](ctx, req, "work", 1)
	if err != nil || got != "ok" {
		t.Fatalf("Call: %q, %v", got, err)
	}
	testHookSending = nil
	time.Sleep(200 * time.Millisecond) // a third sending would arrive meanwhile
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for id, k := range handled {
		if id != lost {
			total += k
		}
	}
	if lost == "" || total != 1 || handled[lost] != 0 {
		t.Fatalf("handled %v (lost %s), want once by the other responder", handled, lost)
	}
}
