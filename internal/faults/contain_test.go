package faults

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/internal/wire"
	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/publisher"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
	"github.com/warrenmesh/warren/subscriber"
)

// Bad work inside the mesh, on two loopback nodes: a handler that panics,
// payloads and replies that do not decode, messages too large for the frame
// limit, a request without a type, a subscriber that never returns. Each
// gets a clear error or is contained, and the process keeps serving.

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func closeAll(t *testing.T, cs ...interface{ Close(context.Context) error }) {
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close(ctxT(t, 5*time.Second))
		}
	})
}

// reqres is a requester on one node and a responder on the other.
func reqres(t *testing.T, opts ...mesh.Option) (*requester.Requester, *responder.Responder, *mesh.Node) {
	nodes := meshtest.Cluster(t, 2, opts...)
	req, err := requester.New("contain", requester.WithMesh(nodes[0]), requester.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := responder.New("contain", responder.WithMesh(nodes[1]))
	if err != nil {
		t.Fatal(err)
	}
	closeAll(t, req, resp)
	handle(t, req, nodes[0], resp, "echo", func(ctx context.Context, r *responder.Request) (any, error) {
		var s string
		return s, r.Decode(&s)
	})
	return req, resp, nodes[0]
}

// handle registers h for typ on resp and waits until req's node sees it.
func handle(t *testing.T, req *requester.Requester, n *mesh.Node, resp *responder.Responder, typ string, h responder.HandlerFunc) {
	t.Helper()
	resp.On(typ, h)
	if err := n.Await(ctxT(t, 5*time.Second), func(cs []mesh.Component) bool {
		for _, c := range cs {
			if c.Kind == mesh.KindResponder && slices.Contains(c.Handles, typ) {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("handler for %q not visible: %v", typ, err)
	}
}

// stillServes checks that the responder answers normal requests.
func stillServes(t *testing.T, req *requester.Requester) {
	t.Helper()
	for i := range 20 {
		want := strings.Repeat("x", i)
		if got, err := requester.Call[string](ctxT(t, 5*time.Second), req, "echo", want); err != nil || got != want {
			t.Fatalf("after the fault, echo %d: %q, %v", i, got, err)
		}
	}
}

func TestHandlerPanicIsContained(t *testing.T) {
	req, resp, n := reqres(t)
	handle(t, req, n, resp, "boom", func(ctx context.Context, r *responder.Request) (any, error) { panic("kaboom") })
	for range 50 {
		_, err := requester.Call[string](ctxT(t, 5*time.Second), req, "boom", "x")
		var remote *requester.RemoteError
		if !errors.As(err, &remote) || remote.Code != "panic" || !strings.Contains(remote.Message, "kaboom") {
			t.Fatalf("panicking handler: %v, want a *RemoteError with code panic", err)
		}
	}
	if s := resp.Stats(); s.Panics != 50 {
		t.Errorf("%d panics counted, want 50", s.Panics)
	}
	stillServes(t, req)
}

func TestPayloadsThatDoNotDecode(t *testing.T) {
	req, resp, n := reqres(t)
	handle(t, req, n, resp, "square", func(ctx context.Context, r *responder.Request) (any, error) {
		var n int
		if err := r.Decode(&n); err != nil {
			return nil, &responder.Error{Code: "bad_request", Message: err.Error()}
		}
		return n * n, nil
	})
	// The request does not decode into the handler's type.
	_, err := requester.Call[int](ctxT(t, 5*time.Second), req, "square", "not a number")
	var remote *requester.RemoteError
	if !errors.As(err, &remote) || remote.Code != "bad_request" {
		t.Fatalf("undecodable request: %v, want a *RemoteError with code bad_request", err)
	}
	// The reply does not decode into the caller's type.
	if _, err := requester.Call[struct{ A []int }](ctxT(t, 5*time.Second), req, "echo", "text"); !errors.Is(err, requester.ErrDecode) {
		t.Fatalf("undecodable reply: %v, want ErrDecode", err)
	}
	// Raw bytes that are not msgpack at all.
	handle(t, req, n, resp, "raw", func(ctx context.Context, r *responder.Request) (any, error) {
		var v map[string]int
		return nil, r.Decode(&v)
	})
	if _, err := requester.Call[int](ctxT(t, 5*time.Second), req, "raw", []byte{0xc1, 0xc1}); !errors.As(err, &remote) {
		t.Fatalf("handler decode error: %v, want a *RemoteError", err)
	}
	stillServes(t, req)
}

func TestMessagesTooLargeForTheFrameLimit(t *testing.T) {
	const limit = 4096
	req, resp, n := reqres(t, mesh.WithMaxFrame(limit))
	handle(t, req, n, resp, "big", func(ctx context.Context, r *responder.Request) (any, error) {
		var n int
		if err := r.Decode(&n); err != nil {
			return nil, err
		}
		return strings.Repeat("y", n), nil
	})
	if got, err := requester.Call[string](ctxT(t, 5*time.Second), req, "big", 100); err != nil || len(got) != 100 {
		t.Fatalf("small reply: %d bytes, %v", len(got), err)
	}
	// A reply over the limit: the caller is told, with the size.
	_, err := requester.Call[string](ctxT(t, 5*time.Second), req, "big", 2*limit)
	if !errors.Is(err, requester.ErrReplyTooLarge) {
		t.Fatalf("reply over the frame limit: %v, want ErrReplyTooLarge", err)
	}
	t.Logf("reply too large: %v", err)
	// A request over the limit fails at once, before leaving the process.
	_, err = requester.Call[string](ctxT(t, 5*time.Second), req, "echo", strings.Repeat("z", 2*limit))
	if !errors.Is(err, wire.ErrFrameTooLarge) {
		t.Fatalf("request over the frame limit: %v, want wire.ErrFrameTooLarge", err)
	}
	t.Logf("request too large: %v", err)
	stillServes(t, req)
}

// rawPort is a bare mesh component that records the responses it gets.
type rawPort struct {
	mu   sync.Mutex
	got  []wire.Header
	seen chan struct{}
}

func (r *rawPort) HandleFrame(_ string, f *wire.Frame) {
	if f.Kind != wire.KindResponse {
		return
	}
	r.mu.Lock()
	r.got = append(r.got, f.Header)
	r.mu.Unlock()
	select {
	case r.seen <- struct{}{}:
	default:
	}
}
func (r *rawPort) PeerDown(string) {}

func TestRequestWithAnEmptyType(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	req, err := requester.New("contain", requester.WithMesh(nodes[0]), requester.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := responder.New("contain", responder.WithMesh(nodes[1]))
	if err != nil {
		t.Fatal(err)
	}
	closeAll(t, req, resp)
	resp.On("**", func(ctx context.Context, r *responder.Request) (any, error) { return r.Type, nil })
	// Through the API: refused before anything is sent.
	if _, err := requester.Call[string](ctxT(t, 5*time.Second), req, "", 1); !errors.Is(err, requester.ErrInvalidType) {
		t.Fatalf("empty type: %v, want ErrInvalidType", err)
	}
	// On the wire, from a component that skips the API: the responder
	// answers "no handler", even with a catch-all pattern.
	var target mesh.Component
	meshtest.Eventually(t, 5*time.Second, func() error {
		for _, c := range nodes[0].Catalogue() {
			if c.Kind == mesh.KindResponder {
				target = c
				return nil
			}
		}
		return errors.New("responder not visible")
	})
	rp := &rawPort{seen: make(chan struct{}, 1)}
	port, err := nodes[0].Register(mesh.Component{Kind: mesh.KindRequester, Name: "raw"}, rp)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	if err := port.Send(ctxT(t, 5*time.Second), target.Node, wire.KindRequest, &wire.Header{To: target.ID, Seq: 1}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rp.seen:
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to a request without a type")
	}
	rp.mu.Lock()
	h := rp.got[0]
	rp.mu.Unlock()
	if h.Status != wire.StatusNoHandler || h.Seq != 1 || h.Msg == "" {
		t.Fatalf("request without a type answered %+v, want status no-handler with a message", h)
	}
	t.Logf("answered: status %d, %q", h.Status, h.Msg)
	if got, err := requester.Call[string](ctxT(t, 5*time.Second), req, "a.b", 1); err != nil || got != "a.b" {
		t.Fatalf("after the fault: %q, %v", got, err)
	}
}

// TestSubscriberThatBlocksForever: a subscriber whose handler never returns
// holds up neither the publisher nor the other subscribers: the others get
// every event, Publish reports a clear error when it would wait past its
// deadline (or, with WithDropWhenFull, counts the drops), and Close on the
// stuck subscriber returns once its context ends.
func TestSubscriberThatBlocksForever(t *testing.T) {
	for _, dropFull := range []bool{false, true} {
		name := "waits"
		if dropFull {
			name = "drops"
		}
		t.Run(name, func(t *testing.T) {
			nodes := meshtest.Cluster(t, 3)
			release := make(chan struct{})
			defer close(release) // "forever" ends with the test, so no goroutine leaks
			opts := []subscriber.Option{subscriber.WithMesh(nodes[1]), subscriber.WithBuffer(16)}
			if dropFull {
				opts = append(opts, subscriber.WithDropWhenFull())
			}
			stuck, err := subscriber.New("stuck", opts...)
			if err != nil {
				t.Fatal(err)
			}
			var entered atomic.Int64
			stuck.On("load.*", func(ctx context.Context, m *subscriber.Message) {
				entered.Add(1)
				<-release
			})
			healthy, err := subscriber.New("healthy", subscriber.WithMesh(nodes[2]))
			if err != nil {
				t.Fatal(err)
			}
			var got atomic.Int64
			healthy.On("load.*", func(ctx context.Context, m *subscriber.Message) { got.Add(1) })
			pub, err := publisher.New("contain", publisher.WithMesh(nodes[0]))
			if err != nil {
				t.Fatal(err)
			}
			closeAll(t, pub, healthy)
			meshtest.Eventually(t, 5*time.Second, func() error {
				n := 0
				for _, c := range nodes[0].Catalogue() {
					if c.Kind == mesh.KindSubscriber {
						n++
					}
				}
				if n != 2 {
					return errors.New("subscribers not visible")
				}
				return nil
			})
			// One event with time to spare first, so that both connections
			// exist: a Publish whose 50 ms end while it dials a subscriber
			// (on a loaded machine) rightly leaves the event undelivered.
			if err := pub.Publish(ctxT(t, 10*time.Second), "load.warm", -1); err != nil {
				t.Fatalf("first Publish: %v", err)
			}
			meshtest.Eventually(t, 5*time.Second, func() error {
				if got.Load() != 1 {
					return errors.New("healthy subscriber did not get the first event")
				}
				return nil
			})
			const events = 60
			var timeouts int
			for i := range events {
				err := pub.Publish(ctxT(t, 50*time.Millisecond), "load.tick", i)
				switch {
				case err == nil:
				case errors.Is(err, context.DeadlineExceeded):
					timeouts++
				default:
					t.Fatalf("Publish: %v", err)
				}
			}
			meshtest.Eventually(t, 5*time.Second, func() error {
				if n := got.Load() - 1; n != events {
					return fmt.Errorf("healthy subscriber got %d of %d events (Publish timed out %d times)", n, events, timeouts)
				}
				return nil
			})
			st := pub.Stats()
			t.Logf("stuck subscriber (%s): handler entered %d times; Publish timed out %d times; publisher stats %+v", name, entered.Load(), timeouts, st)
			if dropFull {
				if timeouts != 0 || st.DroppedFull == 0 {
					t.Errorf("drop-when-full: %d Publish timeouts, %d dropped, want 0 and some", timeouts, st.DroppedFull)
				}
			} else if timeouts == 0 {
				t.Error("Publish never reported waiting for the full subscriber")
			}
			if err := stuck.Close(ctxT(t, 200*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Close on the stuck subscriber: %v, want a deadline error", err)
			}
			if err := pub.Publish(ctxT(t, time.Second), "load.tick", -1); err != nil {
				t.Errorf("Publish after the stuck subscriber closed: %v", err)
			}
		})
	}
}
