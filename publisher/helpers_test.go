package publisher_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
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

func newPub(t testing.TB, n *mesh.Node, opts ...publisher.Option) *publisher.Publisher {
	t.Helper()
	p, err := publisher.New("pub", append([]publisher.Option{publisher.WithMesh(n)}, opts...)...)
	if err != nil {
		t.Fatalf("publisher.New: %v", err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

func newSub(t testing.TB, n *mesh.Node, name string, opts ...subscriber.Option) *subscriber.Subscriber {
	t.Helper()
	s, err := subscriber.New(name, append([]subscriber.Option{subscriber.WithMesh(n)}, opts...)...)
	if err != nil {
		t.Fatalf("subscriber.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close subscriber %s: %v", name, err)
		}
	})
	return s
}

// waitSubscribers waits until n's catalogue lists exactly k active
// subscribers with patterns (of any environment, key or namespace).
func waitSubscribers(t testing.TB, n *mesh.Node, k int) {
	t.Helper()
	meshtest.Eventually(t, waitFor, func() error {
		got := 0
		for _, c := range n.View().Components {
			if c.Kind == mesh.KindSubscriber && c.State == mesh.StateActive && len(c.Handles) > 0 {
				got++
			}
		}
		if got != k {
			return fmt.Errorf("%s sees %d subscribers, want %d", n.ID(), got, k)
		}
		return nil
	})
}

// waitPatterns waits until n's catalogue lists a subscriber advertising
// every pattern in want.
func waitPatterns(t testing.TB, n *mesh.Node, name string, want ...string) {
	t.Helper()
	meshtest.Eventually(t, waitFor, func() error {
		for _, c := range n.View().Components {
			if c.Kind == mesh.KindSubscriber && c.Name == name {
				missing := false
				for _, w := range want {
					if !slices.Contains(c.Handles, w) {
						missing = true
					}
				}
				if !missing {
					return nil
				}
			}
		}
		return fmt.Errorf("%s does not see subscriber %s with patterns %v", n.ID(), name, want)
	})
}

// inbox records what a subscriber received.
type inbox struct {
	mu     sync.Mutex
	topics []string
	vals   []int
}

func (b *inbox) add(topic string, v int) {
	b.mu.Lock()
	b.topics = append(b.topics, topic)
	b.vals = append(b.vals, v)
	b.mu.Unlock()
}

func (b *inbox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.topics)
}

func (b *inbox) snapshot() ([]string, []int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.topics), slices.Clone(b.vals)
}

// collect registers a handler for pattern that records int payloads.
func collect(s *subscriber.Subscriber, pattern string) *inbox {
	b := &inbox{}
	s.On(pattern, func(_ context.Context, m *subscriber.Message) {
		var v int
		if err := m.Decode(&v); err != nil {
			v = -1
		}
		b.add(m.Topic, v)
	})
	return b
}

func waitLen(t testing.TB, b *inbox, n int) {
	t.Helper()
	meshtest.Eventually(t, waitFor, func() error {
		if got := b.len(); got != n {
			return fmt.Errorf("received %d events, want %d", got, n)
		}
		return nil
	})
}

func publish(t testing.TB, p *publisher.Publisher, topic string, vals ...int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for _, v := range vals {
		if err := p.Publish(ctx, topic, v); err != nil {
			t.Fatalf("Publish(%q, %d): %v", topic, v, err)
		}
	}
}

func seq(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

// waitIdle waits until s has handled everything it received.
func waitIdle(t testing.TB, s *subscriber.Subscriber) subscriber.Stats {
	t.Helper()
	var st subscriber.Stats
	meshtest.Eventually(t, waitFor, func() error {
		st = s.Stats()
		if st.Queued != 0 {
			return fmt.Errorf("%d events still queued", st.Queued)
		}
		return nil
	})
	return st
}

// cluster starts k joined nodes and reports any node that gossip declares
// failed during the test: events in flight to it are lost (delivery is at
// most once), which explains a count that falls short on a starved machine.
func cluster(t testing.TB, k int) []*mesh.Node {
	t.Helper()
	nodes := meshtest.Cluster(t, k)
	watchFailures(t, nodes...)
	return nodes
}

func watchFailures(t testing.TB, nodes ...*mesh.Node) {
	log := meshtest.Logger(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, n := range nodes {
		n.Watch(ctx, func(e mesh.Event) {
			if e.Type == mesh.NodeFailed {
				log.Warn("test: gossip declared a node failed", "seen_by", n.ID(), "node", e.Node)
			}
		})
	}
}
