package subscriber_test

import (
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
	"github.com/warrenmesh/warren/publisher"
	"github.com/warrenmesh/warren/subscriber"
)

func TestMain(m *testing.M) {
	meshtest.SafeEnv()
	os.Exit(m.Run())
}

const waitFor = 10 * time.Second

type fixture struct {
	nodes []*mesh.Node
	pub   *publisher.Publisher
}

func setup(t *testing.T) fixture {
	t.Helper()
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	pub, err := publisher.New("pub", publisher.WithMesh(nodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close(context.Background()) })
	return fixture{nodes: nodes, pub: pub}
}

func (f fixture) sub(t *testing.T, name string, opts ...subscriber.Option) *subscriber.Subscriber {
	t.Helper()
	s, err := subscriber.New(name, append([]subscriber.Option{subscriber.WithMesh(f.nodes[1])}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// waitVisible waits until the publisher's node sees k subscribers.
func (f fixture) waitVisible(t *testing.T, k int) {
	t.Helper()
	meshtest.Eventually(t, waitFor, func() error {
		got := 0
		for _, c := range f.nodes[0].View().Components {
			if c.Kind == mesh.KindSubscriber {
				got++
			}
		}
		if got != k {
			return fmt.Errorf("%d subscribers visible, want %d", got, k)
		}
		return nil
	})
}

func (f fixture) publish(t *testing.T, topic string, payloads ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for _, p := range payloads {
		if err := f.pub.Publish(ctx, topic, p); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
}

func waitStats(t *testing.T, s *subscriber.Subscriber, ok func(subscriber.Stats) bool) subscriber.Stats {
	t.Helper()
	var st subscriber.Stats
	meshtest.Eventually(t, waitFor, func() error {
		st = s.Stats()
		if !ok(st) {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	return st
}

func TestHandlerPanicRecovered(t *testing.T) {
	f := setup(t)
	s := f.sub(t, "panicky")
	var got []int
	var mu sync.Mutex
	subscriber.Handle(s, "p", func(_ context.Context, v int) {
		if v == 1 {
			panic("boom")
		}
		mu.Lock()
		got = append(got, v)
		mu.Unlock()
	})
	f.waitVisible(t, 1)
	f.publish(t, "p", 0, 1, 2, 3)
	st := waitStats(t, s, func(st subscriber.Stats) bool { return st.Delivered == 4 })
	if st.Panics != 1 {
		t.Errorf("panics %d, want 1", st.Panics)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[0 2 3]" {
		t.Errorf("handled %v, want [0 2 3]", got)
	}
}

type order struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

func TestHandleTyped(t *testing.T) {
	f := setup(t)
	s := f.sub(t, "typed")
	orders := make(chan order, 10)
	subscriber.Handle(s, "order.*", func(_ context.Context, o order) { orders <- o })
	f.waitVisible(t, 1)
	f.publish(t, "order.placed", order{ID: "a1", Total: 42})
	f.publish(t, "order.placed", "not an order")
	f.publish(t, "order.placed", map[string]any{"id": "b2", "total": 7})
	for _, want := range []order{{"a1", 42}, {"b2", 7}} {
		select {
		case got := <-orders:
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		case <-time.After(waitFor):
			t.Fatalf("no order %v", want)
		}
	}
	st := waitStats(t, s, func(st subscriber.Stats) bool { return st.Delivered == 3 })
	if st.DecodeErrors != 1 {
		t.Errorf("decode errors %d, want 1", st.DecodeErrors)
	}
}

func TestMessage(t *testing.T) {
	f := setup(t)
	s := f.sub(t, "raw")
	type seen struct {
		topic, from string
		err         error
		nilPayload  bool
	}
	ch := make(chan seen, 2)
	s.On("raw.**", func(_ context.Context, m *subscriber.Message) {
		var v struct{ X int }
		err := m.Decode(&v)
		ch <- seen{m.Topic, m.From, err, len(m.Payload()) == 0}
	})
	f.waitVisible(t, 1)
	f.publish(t, "raw.a.b", nil)
	f.publish(t, "raw.c", 5)
	got := <-ch
	if got.topic != "raw.a.b" || got.from != f.nodes[0].ID() || got.err != nil || !got.nilPayload {
		t.Errorf("nil payload: got %+v", got)
	}
	got = <-ch
	if got.topic != "raw.c" || !errors.Is(got.err, subscriber.ErrDecode) {
		t.Errorf("int into struct: got %+v, want ErrDecode", got)
	}
}

// TestCloseFinishesBufferedEvents: Close waits for the events already
// buffered.
func TestCloseFinishesBufferedEvents(t *testing.T) {
	f := setup(t)
	s, err := subscriber.New("draining", subscriber.WithMesh(f.nodes[1]))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var handled atomic.Int64
	s.On("work", func(context.Context, *subscriber.Message) {
		<-release
		handled.Add(1)
	})
	f.waitVisible(t, 1)
	f.publish(t, "work", 1, 2, 3, 4, 5)
	waitStats(t, s, func(st subscriber.Stats) bool { return st.Received == 5 })
	go func() {
		time.Sleep(50 * time.Millisecond)
		close(release)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := handled.Load(); n != 5 {
		t.Errorf("Close returned after %d of 5 buffered events", n)
	}
	// Gone from the catalogue; On after Close is ignored.
	f.waitVisible(t, 0)
	s.On("more", func(context.Context, *subscriber.Message) {})
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCloseTimeoutAbandons: when Close's ctx ends, the handlers' context is
// cancelled and what is left is dropped and counted.
func TestCloseTimeoutAbandons(t *testing.T) {
	f := setup(t)
	s, err := subscriber.New("stuck", subscriber.WithMesh(f.nodes[1]))
	if err != nil {
		t.Fatal(err)
	}
	s.On("work", func(ctx context.Context, _ *subscriber.Message) { <-ctx.Done() })
	f.waitVisible(t, 1)
	f.publish(t, "work", 1, 2, 3)
	waitStats(t, s, func(st subscriber.Stats) bool { return st.Received == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want a deadline error", err)
	}
	st := waitStats(t, s, func(st subscriber.Stats) bool { return st.Queued == 0 })
	if st.Delivered != 1 || st.Abandoned != 2 {
		t.Errorf("stats %+v, want 1 delivered (cancelled) and 2 abandoned", st)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("Close again: %v", err)
	}
}

func TestUnusedSubscriberIsInvisible(t *testing.T) {
	f := setup(t)
	s := f.sub(t, "idle")
	_ = s
	f.publish(t, "anything", 1)
	if st := f.pub.Stats(); st.NoSubscriber != 1 {
		t.Errorf("stats %+v: a subscriber without patterns got an event", st)
	}
	for _, c := range f.nodes[1].View().Components {
		if c.Kind == mesh.KindSubscriber {
			t.Errorf("subscriber without patterns is in the catalogue: %v", c)
		}
	}
}

func TestInvalidArguments(t *testing.T) {
	meshtest.CheckGoroutines(t)
	n := meshtest.Node(t)
	for _, b := range []int{-1, subscriber.MaxBuffer + 1} {
		if _, err := subscriber.New("x", subscriber.WithMesh(n), subscriber.WithBuffer(b)); !errors.Is(err, subscriber.ErrInvalidConfig) {
			t.Errorf("WithBuffer(%d): %v, want ErrInvalidConfig", b, err)
		}
	}
	for _, b := range []int64{0, -1, subscriber.MaxBufferBytes + 1} {
		if _, err := subscriber.New("x", subscriber.WithMesh(n), subscriber.WithBufferBytes(b)); !errors.Is(err, subscriber.ErrInvalidConfig) {
			t.Errorf("WithBufferBytes(%d): %v, want ErrInvalidConfig", b, err)
		}
	}
	s, err := subscriber.New("x", subscriber.WithMesh(n))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	for _, p := range []string{"", "a..b", "a.**.b", "a*"} {
		func() {
			defer func() {
				r := recover()
				err, _ := r.(error)
				if !errors.Is(err, subscriber.ErrInvalidPattern) {
					t.Errorf("On(%q) panicked with %v, want ErrInvalidPattern", p, r)
				}
			}()
			s.On(p, func(context.Context, *subscriber.Message) {})
		}()
	}
}

// TestPatternsAddedLater: a pattern added by a later On reaches publishers.
func TestPatternsAddedLater(t *testing.T) {
	f := setup(t)
	s := f.sub(t, "growing")
	got := make(chan string, 10)
	s.On("a", func(_ context.Context, m *subscriber.Message) { got <- m.Topic })
	f.waitVisible(t, 1)
	s.On("b.*", func(_ context.Context, m *subscriber.Message) { got <- m.Topic })
	meshtest.Eventually(t, waitFor, func() error {
		for _, c := range f.nodes[0].View().Components {
			if c.Kind == mesh.KindSubscriber && len(c.Handles) == 2 {
				return nil
			}
		}
		return errors.New("second pattern not advertised yet")
	})
	f.publish(t, "a", 1)
	f.publish(t, "b.c", 2)
	for _, want := range []string{"a", "b.c"} {
		select {
		case tp := <-got:
			if tp != want {
				t.Errorf("topic %q, want %q", tp, want)
			}
		case <-time.After(waitFor):
			t.Fatalf("no event %q", want)
		}
	}
}
