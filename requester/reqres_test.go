package requester_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
)

func TestMain(m *testing.M) {
	meshtest.SafeEnv()
	os.Exit(m.Run())
}

type card struct {
	Number string `json:"number"`
}

type verdict struct {
	Status string `json:"status"`
	By     string `json:"by"`
}

func newResponder(t testing.TB, n *mesh.Node, name string, opts ...responder.Option) *responder.Responder {
	t.Helper()
	r, err := responder.New(name, append([]responder.Option{responder.WithMesh(n), responder.WithDrainGrace(20 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.Close(ctx)
	})
	return r
}

func newRequester(t testing.TB, n *mesh.Node, opts ...requester.Option) *requester.Requester {
	t.Helper()
	r, err := requester.New("client", append([]requester.Option{requester.WithMesh(n)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.Close(ctx)
	})
	return r
}

// validator registers a "validate" handler that names its node.
func validator(t testing.TB, n *mesh.Node, opts ...responder.Option) (*responder.Responder, *atomic.Int64) {
	r := newResponder(t, n, "validation", opts...)
	var count atomic.Int64
	responder.Handle(r, "validate", func(ctx context.Context, c card) (verdict, error) {
		count.Add(1)
		if len(c.Number) < 6 {
			return verdict{}, responder.Errorf("invalid_card", "card %q is too short", c.Number)
		}
		return verdict{Status: "validated", By: n.ID()}, nil
	})
	return r, &count
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestSimpleRequest(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	validator(t, nodes[1])
	req := newRequester(t, nodes[0])
	v, err := requester.Call[verdict](ctxT(t, 5*time.Second), req, "validate", card{"123456"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != "validated" || v.By != nodes[1].ID() {
		t.Fatalf("reply %+v", v)
	}
}

func TestSameProcessResponder(t *testing.T) {
	meshtest.CheckGoroutines(t)
	n := meshtest.Node(t)
	validator(t, n)
	req := newRequester(t, n)
	if _, err := requester.Call[verdict](ctxT(t, 5*time.Second), req, "validate", card{"123456"}); err != nil {
		t.Fatal(err)
	}
}

func TestHandlerErrorCarriesCodeAndMessage(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	validator(t, nodes[1])
	req := newRequester(t, nodes[0])
	_, err := requester.Call[verdict](ctxT(t, 5*time.Second), req, "validate", card{"12"})
	var re *requester.RemoteError
	if !errors.As(err, &re) || re.Code != "invalid_card" || re.Message != `card "12" is too short` || re.Responder != nodes[1].ID() {
		t.Fatalf("err = %#v", err)
	}
}

func TestPanicIsRecoveredAndResponderKeepsServing(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	r := newResponder(t, nodes[1], "fragile")
	r.On("boom", func(context.Context, *responder.Request) (any, error) { panic("kaboom") })
	r.On("ok", func(context.Context, *responder.Request) (any, error) { return "fine", nil })
	req := newRequester(t, nodes[0])
	ctx := ctxT(t, 5*time.Second)
	err := req.Send(ctx, "boom", nil, nil)
	var re *requester.RemoteError
	if !errors.As(err, &re) || re.Code != "panic" {
		t.Fatalf("panic reply: %v", err)
	}
	s, err := requester.Call[string](ctx, req, "ok", nil)
	if err != nil || s != "fine" {
		t.Fatalf("after panic: %q %v", s, err)
	}
	if r.Stats().Panics != 1 {
		t.Fatalf("panics = %d", r.Stats().Panics)
	}
}

func TestTypeAwareRouting(t *testing.T) {
	// cote's top complaint: requests go to responders without a handler.
	nodes := meshtest.Cluster(t, 3)
	_, validations := validator(t, nodes[1])
	other := newResponder(t, nodes[2], "other")
	var others atomic.Int64
	other.On("refund", func(context.Context, *responder.Request) (any, error) { others.Add(1); return "r", nil })
	req := newRequester(t, nodes[0])
	ctx := ctxT(t, 10*time.Second)
	waitHandlers(t, nodes[0], "validate", 1)
	waitHandlers(t, nodes[0], "refund", 1)
	for i := 0; i < 50; i++ {
		if _, err := requester.Call[verdict](ctx, req, "validate", card{"123456"}); err != nil {
			t.Fatal(err)
		}
		if _, err := requester.Call[string](ctx, req, "refund", nil); err != nil {
			t.Fatal(err)
		}
	}
	if validations.Load() != 50 || others.Load() != 50 {
		t.Fatalf("validate handled %d, refund handled %d", validations.Load(), others.Load())
	}
}

func TestUnknownTypeFailsPromptly(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	validator(t, nodes[1])
	req := newRequester(t, nodes[0])
	waitHandlers(t, nodes[0], "validate", 1)
	start := time.Now()
	err := req.Send(ctxT(t, 5*time.Second), "teleport", nil, nil)
	if !errors.Is(err, requester.ErrNoHandler) {
		t.Fatalf("err = %v, want ErrNoHandler", err)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("took %s", time.Since(start))
	}
	if err := req.Send(ctxT(t, time.Second), "", nil, nil); !errors.Is(err, requester.ErrInvalidType) {
		t.Fatalf("empty type: %v", err)
	}
}

func TestWildcardTypes(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	r := newResponder(t, nodes[1], "wild")
	r.On("card.*", func(_ context.Context, req *responder.Request) (any, error) { return "one:" + req.Type, nil })
	r.On("**", func(_ context.Context, req *responder.Request) (any, error) { return "any:" + req.Type, nil })
	r.On("card.exact", func(_ context.Context, req *responder.Request) (any, error) { return "exact", nil })
	req := newRequester(t, nodes[0])
	ctx := ctxT(t, 5*time.Second)
	for typ, want := range map[string]string{"card.validate": "one:card.validate", "card.exact": "exact", "x": "any:x", "a.b.c": "any:a.b.c"} {
		got, err := requester.Call[string](ctx, req, typ, nil)
		if err != nil || got != want {
			t.Fatalf("%s: %q %v, want %q", typ, got, err, want)
		}
	}
}

func TestRoundRobinIsEven(t *testing.T) {
	nodes := meshtest.Cluster(t, 4)
	var counts [3]*atomic.Int64
	for i := 0; i < 3; i++ {
		_, counts[i] = validator(t, nodes[i+1])
	}
	req := newRequester(t, nodes[0])
	waitHandlers(t, nodes[0], "validate", 3)
	ctx := ctxT(t, 20*time.Second)
	for i := 0; i < 300; i++ {
		if _, err := requester.Call[verdict](ctx, req, "validate", card{"123456"}); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range counts {
		if c.Load() < 99 || c.Load() > 101 {
			t.Fatalf("responder %d got %d of 300", i, c.Load())
		}
	}
}

func TestLeastPendingAvoidsTheSlowResponder(t *testing.T) {
	nodes := meshtest.Cluster(t, 3)
	slow := newResponder(t, nodes[1], "slow")
	var slowN, fastN atomic.Int64
	slow.On("work", func(ctx context.Context, _ *responder.Request) (any, error) {
		slowN.Add(1)
		time.Sleep(50 * time.Millisecond)
		return nil, nil
	})
	fast := newResponder(t, nodes[2], "fast")
	fast.On("work", func(context.Context, *responder.Request) (any, error) { fastN.Add(1); return nil, nil })
	req := newRequester(t, nodes[0], requester.WithBalancer(requester.LeastPending()))
	waitHandlers(t, nodes[0], "work", 2)
	ctx := ctxT(t, 20*time.Second)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				req.Send(ctx, "work", nil, nil)
			}
		}()
	}
	wg.Wait()
	if fastN.Load() <= 2*slowN.Load() {
		t.Fatalf("least-pending sent %d to the slow responder and %d to the fast one", slowN.Load(), fastN.Load())
	}
}

func TestHeldUntilResponderAppears(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	req := newRequester(t, nodes[0])
	ctx := ctxT(t, 10*time.Second)
	type res struct {
		v   verdict
		err error
	}
	done := make(chan res, 3)
	for i := 0; i < 3; i++ {
		go func() {
			v, err := requester.Call[verdict](ctx, req, "validate", card{"123456"})
			done <- res{v, err}
		}()
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if req.Stats().Held != 3 {
			return fmt.Errorf("held = %d", req.Stats().Held)
		}
		return nil
	})
	validator(t, nodes[1])
	for i := 0; i < 3; i++ {
		r := <-done
		if r.err != nil || r.v.Status != "validated" {
			t.Fatalf("held request: %+v %v", r.v, r.err)
		}
	}
}

func TestHeldRequestThatTimesOutNeverReachesAResponder(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	req := newRequester(t, nodes[0], requester.WithTimeout(100*time.Millisecond))
	err := req.Send(context.Background(), "validate", card{"123456"}, nil)
	if !errors.Is(err, requester.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	_, count := validator(t, nodes[1])
	waitHandlers(t, nodes[0], "validate", 1)
	time.Sleep(200 * time.Millisecond)
	if count.Load() != 0 {
		t.Fatalf("a timed-out held request reached the responder")
	}
	// A per-call deadline works the same way, and wins over WithTimeout.
	v, err := requester.Call[verdict](ctxT(t, 5*time.Second), req, "validate", card{"123456"})
	if err != nil || v.Status != "validated" {
		t.Fatalf("%+v %v", v, err)
	}
}

func TestHeldQueueIsBounded(t *testing.T) {
	nodes := meshtest.Cluster(t, 1)
	req := newRequester(t, nodes[0], requester.WithMaxPending(2))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() { errs <- req.Send(ctx, "validate", nil, nil) }()
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if req.Stats().Held != 2 {
			return fmt.Errorf("held %d", req.Stats().Held)
		}
		return nil
	})
	start := time.Now()
	if err := req.Send(ctx, "validate", nil, nil); !errors.Is(err, requester.ErrQueueFull) {
		t.Fatalf("third request: %v", err)
	}
	if time.Since(start) > 100*time.Millisecond {
		t.Fatal("a full queue did not fail at once")
	}
	cancel()
	for i := 0; i < 2; i++ {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled held request: %v", err)
		}
	}
	if req.Stats().Held != 0 {
		t.Fatalf("held = %d after cancel", req.Stats().Held)
	}
}

func TestKeysNamespacesAndEnvironmentsPartition(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	newKeyed := func(key, ns string) *atomic.Int64 {
		r := newResponder(t, nodes[1], "keyed", responder.WithKey(key), responder.WithNamespace(ns))
		var n atomic.Int64
		r.On("ping", func(context.Context, *responder.Request) (any, error) { n.Add(1); return key + "/" + ns, nil })
		return &n
	}
	newKeyed("k1", "")
	newKeyed("k2", "")
	newKeyed("k1", "ns")
	waitHandlers(t, nodes[0], "ping", 3)
	ctx := ctxT(t, 5*time.Second)
	for _, tc := range []struct{ key, ns, want string }{{"k1", "", "k1/"}, {"k2", "", "k2/"}, {"k1", "ns", "k1/ns"}} {
		req := newRequester(t, nodes[0], requester.WithKey(tc.key), requester.WithNamespace(tc.ns))
		for i := 0; i < 5; i++ {
			got, err := requester.Call[string](ctx, req, "ping", nil)
			if err != nil || got != tc.want {
				t.Fatalf("key %q ns %q: %q %v", tc.key, tc.ns, got, err)
			}
		}
	}
	// No responder with key k3: the request is held, not misrouted.
	req := newRequester(t, nodes[0], requester.WithKey("k3"), requester.WithTimeout(100*time.Millisecond))
	if err := req.Send(context.Background(), "ping", nil, nil); !errors.Is(err, requester.ErrTimeout) {
		t.Fatalf("unmatched key: %v", err)
	}
}

func TestEnvironmentFromVariable(t *testing.T) {
	t.Setenv(mesh.EnvEnv, "staging")
	staging := meshtest.Cluster(t, 2)
	t.Setenv(mesh.EnvEnv, "")
	prod := meshtest.Node(t, mesh.WithEnvironment("prod"), mesh.WithSeeds(staging[0].Addr()))
	meshtest.WaitMembers(t, append(staging, prod), 3)
	validator(t, staging[1])
	okReq := newRequester(t, staging[0])
	if _, err := requester.Call[verdict](ctxT(t, 5*time.Second), okReq, "validate", card{"123456"}); err != nil {
		t.Fatal(err)
	}
	prodReq := newRequester(t, prod, requester.WithTimeout(150*time.Millisecond))
	if err := prodReq.Send(context.Background(), "validate", card{"123456"}, nil); !errors.Is(err, requester.ErrTimeout) {
		t.Fatalf("cross-environment request: %v", err)
	}
}

func TestSubsets(t *testing.T) {
	nodes := meshtest.Cluster(t, 3)
	_, plain := validator(t, nodes[1])
	req := newRequester(t, nodes[0])
	waitHandlers(t, nodes[0], "validate", 1)
	ctx := ctxT(t, 10*time.Second)
	// A subset request waits while only other responders exist...
	done := make(chan error, 1)
	go func() {
		v, err := requester.Call[verdict](ctx, req, "validate", card{"123456"}, requester.Subset("eu"))
		if err == nil && v.By != nodes[2].ID() {
			err = fmt.Errorf("answered by %s", v.By)
		}
		done <- err
	}()
	meshtest.Eventually(t, 5*time.Second, func() error {
		if req.Stats().Held != 1 {
			return errors.New("subset request not held")
		}
		return nil
	})
	// ... and goes to the subset's responder once it appears.
	_, eu := validator(t, nodes[2], responder.WithSubset("eu"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := requester.Call[verdict](ctx, req, "validate", card{"123456"}, requester.Subset("eu")); err != nil {
			t.Fatal(err)
		}
	}
	if eu.Load() != 11 || plain.Load() != 0 {
		t.Fatalf("eu handled %d, plain %d", eu.Load(), plain.Load())
	}
	// With a timeout, a subset nobody serves times out.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := req.Send(short, "validate", card{"123456"}, nil, requester.Subset("us")); !errors.Is(err, requester.ErrTimeout) {
		t.Fatalf("unserved subset: %v", err)
	}
}

func TestReplyThatDoesNotDecode(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	validator(t, nodes[1])
	req := newRequester(t, nodes[0])
	_, err := requester.Call[int](ctxT(t, 5*time.Second), req, "validate", card{"123456"})
	if !errors.Is(err, requester.ErrDecode) {
		t.Fatalf("err = %v, want ErrDecode", err)
	}
}

func TestConcurrentRepliesAreCorrelated(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 3)
	for _, n := range nodes[1:] {
		r := newResponder(t, n, "echo", responder.WithConcurrency(8))
		responder.Handle(r, "echo", func(_ context.Context, v int) (int, error) { return v * 2, nil })
	}
	req := newRequester(t, nodes[0])
	waitHandlers(t, nodes[0], "echo", 2)
	ctx := ctxT(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				v := g*1000 + i
				got, err := requester.Call[int](ctx, req, "echo", v)
				if err != nil || got != 2*v {
					errs <- fmt.Errorf("echo %d = %d, %v", v, got, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Send recycles its calls, with the buffer of their reply: a call must keep
// nothing of its last use, whether that ended in a reply (longer or shorter
// than this one, over the size of the kept buffer or not), a handler error,
// a discarded reply or an abandoned request whose reply comes late.
func TestRecycledCallsKeepNothingOfTheirPast(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	r := newResponder(t, nodes[1], "echo")
	type in struct {
		Fill  byte `json:"fill"`
		Len   int  `json:"len"`
		Fail  bool `json:"fail"`
		Sleep int  `json:"sleep"` // ms
	}
	responder.Handle(r, "echo", func(ctx context.Context, v in) ([]byte, error) {
		if v.Sleep > 0 {
			time.Sleep(time.Duration(v.Sleep) * time.Millisecond)
		}
		if v.Fail {
			return nil, responder.Errorf(fmt.Sprintf("code-%d", v.Len), "failed %d", v.Len)
		}
		return bytes.Repeat([]byte{v.Fill}, v.Len), nil
	})
	req := newRequester(t, nodes[0])
	waitHandlers(t, nodes[0], "echo", 1)
	ctx := ctxT(t, 60*time.Second)
	lens := []int{1, 40000, 3, 17000, 0, 16 << 10, 900, 2}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 120 {
				v := in{Fill: byte('a' + (g+i)%26), Len: lens[(g+i)%len(lens)]}
				switch i % 6 {
				case 1:
					v.Fail = true
				case 2:
					if err := req.Send(ctx, "echo", v, nil); err != nil {
						errs <- fmt.Errorf("discarded reply: %w", err)
						return
					}
					continue
				case 3:
					v.Sleep = 5
					cctx, cancel := context.WithTimeout(ctx, time.Millisecond)
					var out []byte
					err := req.Send(cctx, "echo", v, &out)
					cancel()
					if !errors.Is(err, requester.ErrTimeout) {
						errs <- fmt.Errorf("abandoned request: %v (reply of %d bytes)", err, len(out))
						return
					}
					continue
				}
				var out []byte
				err := req.Send(ctx, "echo", v, &out)
				if v.Fail {
					var re *requester.RemoteError
					if !errors.As(err, &re) || re.Code != fmt.Sprintf("code-%d", v.Len) || re.Message != fmt.Sprintf("failed %d", v.Len) || out != nil {
						errs <- fmt.Errorf("failing request %+v: %v, reply of %d bytes", v, err, len(out))
						return
					}
					continue
				}
				if err != nil || !bytes.Equal(out, bytes.Repeat([]byte{v.Fill}, v.Len)) {
					errs <- fmt.Errorf("request %+v: %v, reply of %d bytes", v, err, len(out))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestCancellationReachesTheHandler(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	r := newResponder(t, nodes[1], "slow")
	cancelled := make(chan struct{})
	r.On("slow", func(ctx context.Context, _ *responder.Request) (any, error) {
		select {
		case <-ctx.Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
		return nil, ctx.Err()
	})
	req := newRequester(t, nodes[0])
	waitHandlers(t, nodes[0], "slow", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := req.Send(ctx, "slow", nil, nil); !errors.Is(err, requester.ErrTimeout) {
		t.Fatalf("err = %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("handler context not cancelled")
	}
}

// Many requests queued on a busy responder and then abandoned are found and
// cancelled there, past the number of jobs the responder walks instead of
// indexing: each is either dropped before its handler runs or, when its
// cancellation arrives after the handler started (the cancellations of one
// context reach the responder in no set order), has its handler's context
// cancelled; the responder ends with nothing in flight.
func TestCancellationStormOnABusyResponder(t *testing.T) {
	const n = 150 // more than the responder's walk limit (64)
	nodes := meshtest.Cluster(t, 2)
	r := newResponder(t, nodes[1], "busy", responder.WithConcurrency(1))
	var ran atomic.Int64
	r.On("block", func(ctx context.Context, _ *responder.Request) (any, error) {
		ran.Add(1)
		<-ctx.Done() // the first request holds the only slot until it is cancelled
		return nil, ctx.Err()
	})
	req := newRequester(t, nodes[0])
	waitHandlers(t, nodes[0], "block", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, n)
	for range n {
		go func() { errs <- req.Send(ctx, "block", nil, nil) }()
	}
	meshtest.Eventually(t, 10*time.Second, func() error {
		if got := r.Stats().InFlight; got != n {
			return fmt.Errorf("%d requests in the responder, want %d", got, n)
		}
		return nil
	})
	cancel()
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("abandoned request: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("an abandoned request did not return")
		}
	}
	meshtest.Eventually(t, 10*time.Second, func() error {
		st := r.Stats()
		if st.InFlight != 0 || st.Canceled+uint64(ran.Load()) != n {
			return fmt.Errorf("responder: %d in flight, %d dropped before running, %d handlers cancelled; want 0 in flight and %d in all",
				st.InFlight, st.Canceled, ran.Load(), n)
		}
		return nil
	})
}

func TestConcurrencyIsBounded(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	r := newResponder(t, nodes[1], "bounded", responder.WithConcurrency(2))
	var running, peak atomic.Int64
	r.On("work", func(context.Context, *responder.Request) (any, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
		running.Add(-1)
		return nil, nil
	})
	req := newRequester(t, nodes[0])
	waitHandlers(t, nodes[0], "work", 1)
	ctx := ctxT(t, 20*time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); req.Send(ctx, "work", nil, nil) }()
	}
	wg.Wait()
	if peak.Load() != 2 {
		t.Fatalf("peak concurrency %d, want 2", peak.Load())
	}
}

func TestCloseFailsHeldRequests(t *testing.T) {
	nodes := meshtest.Cluster(t, 1)
	req, err := requester.New("c", requester.WithMesh(nodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- req.Send(context.Background(), "validate", nil, nil) }()
	meshtest.Eventually(t, 5*time.Second, func() error {
		if req.Stats().Held != 1 {
			return errors.New("not held")
		}
		return nil
	})
	if err := req.Close(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, requester.ErrClosed) {
		t.Fatalf("held request after Close: %v", err)
	}
	if err := req.Send(context.Background(), "validate", nil, nil); !errors.Is(err, requester.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
}

// waitHandlers waits until n sees k active responders for typ.
func waitHandlers(t testing.TB, n *mesh.Node, typ string, k int) {
	t.Helper()
	meshtest.Eventually(t, 10*time.Second, func() error {
		got := 0
		for _, c := range n.Catalogue() {
			if c.Kind == mesh.KindResponder && c.State == mesh.StateActive {
				for _, h := range c.Handles {
					if h == typ {
						got++
					}
				}
			}
		}
		if got != k {
			return fmt.Errorf("%d responders for %q, want %d", got, typ, k)
		}
		return nil
	})
}

// gatedWork registers "work": a request true ("slow") waits until the
// returned channel is closed, a request false is answered at once.
func gatedWork(r *responder.Responder) chan struct{} {
	gate := make(chan struct{})
	responder.Handle(r, "work", func(ctx context.Context, slow bool) (bool, error) {
		if slow {
			select {
			case <-gate:
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
		return slow, nil
	})
	return gate
}

// Replies to a burst share writes (the mesh holds the connection until the
// burst's jobs have started), but a slow handler must never hold back the
// others' replies, and nothing may stay held once the burst is over.
func TestSlowHandlerDoesNotHoldBackOtherReplies(t *testing.T) {
	for _, conc := range []int{responder.DefaultConcurrency, 2} {
		t.Run(fmt.Sprintf("concurrency=%d", conc), func(t *testing.T) {
			nodes := meshtest.Cluster(t, 2)
			r := newResponder(t, nodes[1], "mixed", responder.WithConcurrency(conc))
			gate := gatedWork(r)
			req := newRequester(t, nodes[0])
			waitHandlers(t, nodes[0], "work", 1)
			ctx := ctxT(t, 20*time.Second)
			slow := req.Go(ctx, "work", true, nil)
			const fast = 40
			calls := make([]*requester.Pending, fast)
			for i := range calls {
				calls[i] = req.Go(ctx, "work", false, nil)
			}
			for i, c := range calls {
				select {
				case <-c.Done():
					if err := c.Wait(); err != nil {
						t.Fatalf("fast request %d: %v", i, err)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("fast request %d not answered while a slow handler runs", i)
				}
			}
			select {
			case <-slow.Done():
				t.Fatalf("slow request answered before its handler was released: %v", slow.Wait())
			default:
			}
			close(gate)
			if err := slow.Wait(); err != nil {
				t.Fatalf("slow request: %v", err)
			}
			// Nothing is left held: lone requests are answered at once.
			for i := range 20 {
				one := ctxT(t, 2*time.Second)
				var got bool
				if err := req.Send(one, "work", false, &got); err != nil {
					t.Fatalf("request %d after the burst: %v", i, err)
				}
			}
		})
	}
}

// With every worker busy in a slow handler, the requests that wait for a
// worker must not hold back a reply that is ready.
func TestBusyWorkersDoNotHoldBackReadyReplies(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	r := newResponder(t, nodes[1], "busy", responder.WithConcurrency(2))
	gate := gatedWork(r)
	req := newRequester(t, nodes[0])
	waitHandlers(t, nodes[0], "work", 1)
	ctx := ctxT(t, 20*time.Second)
	// Worker 1 takes the first slow one, worker 2 the fast one and then the
	// second slow one; the last fast one waits for a worker.
	var calls []*requester.Pending
	for _, slow := range []bool{true, false, true, false} {
		calls = append(calls, req.Go(ctx, "work", slow, nil))
	}
	select {
	case <-calls[1].Done():
		if err := calls[1].Wait(); err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a ready reply was held back while both workers run slow handlers")
	}
	close(gate)
	for i, c := range calls {
		if err := c.Wait(); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
}
