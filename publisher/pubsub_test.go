package publisher_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/publisher"
	"github.com/warrenmesh/warren/subscriber"
)

// The pub/sub part of cote's test suite, in Go, plus what cote gets wrong.

func TestTwoSubscribersEachReceiveOnce(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 3)
	pub := newPub(t, nodes[0])
	s1, s2 := newSub(t, nodes[1], "s1"), newSub(t, nodes[2], "s2")
	b1, b2 := collect(s1, "user.created"), collect(s2, "user.created")
	waitSubscribers(t, nodes[0], 2)

	publish(t, pub, "user.created", seq(0, 10)...)
	waitLen(t, b1, 10)
	waitLen(t, b2, 10)
	for _, b := range []*inbox{b1, b2} {
		topics, vals := b.snapshot()
		if !slices.Equal(vals, seq(0, 10)) {
			t.Errorf("received %v, want 0..9 in order", vals)
		}
		for _, tp := range topics {
			if tp != "user.created" {
				t.Errorf("topic %q, want user.created", tp)
			}
		}
	}
	if st := pub.Stats(); st.Published != 10 || st.Delivered != 20 || st.NoSubscriber != 0 {
		t.Errorf("publisher stats %+v, want 10 published, 20 delivered", st)
	}
	for _, s := range []*subscriber.Subscriber{s1, s2} {
		if st := waitIdle(t, s); st.Received != 10 || st.Delivered != 10 {
			t.Errorf("subscriber stats %+v, want 10 received and delivered", st)
		}
	}
}

func TestSameNodeAndOtherNode(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 2)
	pub := newPub(t, nodes[0])
	local, remote := newSub(t, nodes[0], "local"), newSub(t, nodes[1], "remote")
	bl, br := collect(local, "tick"), collect(remote, "tick")
	waitSubscribers(t, nodes[0], 2)
	publish(t, pub, "tick", seq(0, 100)...)
	waitLen(t, bl, 100)
	waitLen(t, br, 100)
	for _, b := range []*inbox{bl, br} {
		if _, vals := b.snapshot(); !slices.Equal(vals, seq(0, 100)) {
			t.Errorf("received out of order: %v", vals)
		}
	}
}

// TestPartitions checks that keys, namespaces and environments (set by
// option and by WARREN_ENV) keep publishers and subscribers apart.
func TestPartitions(t *testing.T) {
	meshtest.CheckGoroutines(t)
	a := meshtest.Node(t)
	b := meshtest.Node(t, mesh.WithSeeds(a.Addr()))
	staging := meshtest.Node(t, mesh.WithSeeds(a.Addr()), mesh.WithEnvironment("staging"))
	meshtest.WaitMembers(t, []*mesh.Node{a, b, staging}, 3)
	watchFailures(t, a, b, staging)

	plain := newPub(t, a)
	keyed := newPub(t, a, publisher.WithKey("k"))
	spaced := newPub(t, a, publisher.WithNamespace("ns"))
	stagingPub := newPub(t, staging)

	boxes := map[string]*inbox{
		"plain":   collect(newSub(t, b, "plain"), "ev"),
		"keyed":   collect(newSub(t, b, "keyed", subscriber.WithKey("k")), "ev"),
		"spaced":  collect(newSub(t, b, "spaced", subscriber.WithNamespace("ns")), "ev"),
		"both":    collect(newSub(t, b, "both", subscriber.WithKey("k"), subscriber.WithNamespace("ns")), "ev"),
		"staging": collect(newSub(t, staging, "staging"), "ev"),
	}
	waitSubscribers(t, a, 5)
	waitSubscribers(t, staging, 5)

	publish(t, plain, "ev", 1)
	publish(t, keyed, "ev", 2)
	publish(t, spaced, "ev", 3)
	publish(t, stagingPub, "ev", 4)
	want := map[string][]int{"plain": {1}, "keyed": {2}, "spaced": {3}, "both": nil, "staging": {4}}
	for name, w := range want {
		waitLen(t, boxes[name], len(w))
	}
	for _, p := range []*publisher.Publisher{plain, keyed, spaced, stagingPub} {
		if st := p.Stats(); st.Delivered != 1 {
			t.Errorf("publisher sent %d frames, want exactly 1: %+v", st.Delivered, st)
		}
	}
	for name, w := range want {
		if _, got := boxes[name].snapshot(); !slices.Equal(got, w) {
			t.Errorf("%s received %v, want %v", name, got, w)
		}
	}
}

// TestEnvironmentVariable sets the environment the way a container does,
// with WARREN_ENV alone.
func TestEnvironmentVariable(t *testing.T) {
	meshtest.CheckGoroutines(t)
	t.Setenv(mesh.EnvEnv, "blue")
	blue := meshtest.Node(t) // environment from WARREN_ENV
	if got := blue.Environment(); got != "blue" {
		t.Fatalf("environment %q, want blue from %s", got, mesh.EnvEnv)
	}
	blue2 := meshtest.Node(t, mesh.WithSeeds(blue.Addr()))
	other := meshtest.Node(t, mesh.WithSeeds(blue.Addr()), mesh.WithEnvironment("green"))
	meshtest.WaitMembers(t, []*mesh.Node{blue, blue2, other}, 3)
	watchFailures(t, blue, blue2, other)

	pub := newPub(t, blue)
	same := collect(newSub(t, blue2, "blue"), "ev.*")
	diff := collect(newSub(t, other, "green"), "ev.*")
	waitSubscribers(t, blue, 2)
	publish(t, pub, "ev.x", 1, 2, 3)
	waitLen(t, same, 3)
	if st := pub.Stats(); st.Delivered != 3 {
		t.Errorf("delivered %d frames, want 3 (only to the blue subscriber)", st.Delivered)
	}
	if n := diff.len(); n != 0 {
		t.Errorf("subscriber of another environment received %d events", n)
	}
}

func TestPatterns(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 2)
	pub := newPub(t, nodes[0])
	subs := map[string]*inbox{}
	for _, pat := range []string{"user.*", "user.**", "**", "user.created", "*.created", "order.*"} {
		subs[pat] = collect(newSub(t, nodes[1], pat), pat)
	}
	waitSubscribers(t, nodes[0], len(subs))

	topics := []string{"user.created", "user.profile.updated", "user", "order.placed", "audit"}
	for i, tp := range topics {
		publish(t, pub, tp, i)
	}
	want := map[string][]string{
		"user.*":       {"user.created"},
		"user.**":      {"user.created", "user.profile.updated"},
		"**":           topics,
		"user.created": {"user.created"},
		"*.created":    {"user.created"},
		"order.*":      {"order.placed"},
	}
	total := 0
	for pat, w := range want {
		waitLen(t, subs[pat], len(w))
		total += len(w)
	}
	for pat, w := range want {
		if got, _ := subs[pat].snapshot(); !slices.Equal(got, w) {
			t.Errorf("pattern %q received %v, want %v", pat, got, w)
		}
	}
	if st := pub.Stats(); st.Delivered != uint64(total) || st.NoSubscriber != 0 {
		t.Errorf("publisher stats %+v, want %d delivered", st, total)
	}
}

// TestOverlappingPatternsDeliverOnce fixes cote's double delivery: one
// subscriber whose patterns overlap gets one frame, under the full topic,
// and each matching handler runs once.
func TestOverlappingPatternsDeliverOnce(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 2)
	pub := newPub(t, nodes[0])
	s := newSub(t, nodes[1], "overlap")
	star, deep, exact, other := collect(s, "user.*"), collect(s, "user.**"), collect(s, "user.created"), collect(s, "order.*")
	again := collect(s, "user.*") // a second handler for the same pattern runs too
	waitPatterns(t, nodes[0], "overlap", "user.*", "user.**", "user.created", "order.*")

	publish(t, pub, "user.created", 7)
	for _, b := range []*inbox{star, deep, exact, again} {
		waitLen(t, b, 1)
	}
	st := waitIdle(t, s)
	if st.Received != 1 || st.Delivered != 1 {
		t.Errorf("subscriber stats %+v, want the event received once", st)
	}
	if ps := pub.Stats(); ps.Delivered != 1 {
		t.Errorf("publisher sent %d frames, want 1", ps.Delivered)
	}
	for _, b := range []*inbox{star, deep, exact, again} {
		if topics, vals := b.snapshot(); !slices.Equal(topics, []string{"user.created"}) || !slices.Equal(vals, []int{7}) {
			t.Errorf("handler got %v %v, want [user.created] [7]", topics, vals)
		}
	}
	if n := other.len(); n != 0 {
		t.Errorf("order.* handler ran %d times", n)
	}
}

func TestLateSubscriber(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 2)
	pub := newPub(t, nodes[0])
	publish(t, pub, "news", seq(0, 5)...)
	if st := pub.Stats(); st.Published != 5 || st.NoSubscriber != 5 || st.Delivered != 0 {
		t.Fatalf("stats before any subscriber %+v, want 5 published, 5 without subscriber", st)
	}
	s := newSub(t, nodes[1], "late")
	b := collect(s, "news")
	waitSubscribers(t, nodes[0], 1)
	publish(t, pub, "news", seq(5, 3)...)
	waitLen(t, b, 3)
	if _, vals := b.snapshot(); !slices.Equal(vals, []int{5, 6, 7}) {
		t.Errorf("late subscriber received %v, want [5 6 7] only", vals)
	}
	if st := pub.Stats(); st.Published != 8 || st.NoSubscriber != 5 || st.Delivered != 3 {
		t.Errorf("stats %+v, want 8 published, 5 without subscriber, 3 delivered", st)
	}
}

func TestGroupsSplitEvenly(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 3)
	pub := newPub(t, nodes[0])
	var members []*inbox
	for i := range 3 {
		s := newSub(t, nodes[i], fmt.Sprintf("worker%d", i), subscriber.WithGroup("workers"))
		members = append(members, collect(s, "job.*"))
	}
	audit := collect(newSub(t, nodes[1], "audit"), "job.**")
	waitSubscribers(t, nodes[0], 4)

	const n = 300
	publish(t, pub, "job.run", seq(0, n)...)
	waitLen(t, audit, n)
	seen := map[int]int{}
	meshtest.Eventually(t, waitFor, func() error {
		total := 0
		for _, m := range members {
			total += m.len()
		}
		if total != n {
			return fmt.Errorf("group received %d events, want %d", total, n)
		}
		return nil
	})
	for i, m := range members {
		_, vals := m.snapshot()
		if len(vals) < n/3-1 || len(vals) > n/3+1 {
			t.Errorf("member %d received %d events, want %d±1", i, len(vals), n/3)
		}
		if !slices.IsSorted(vals) {
			t.Errorf("member %d received its share out of order", i)
		}
		for _, v := range vals {
			seen[v]++
		}
	}
	for v := range n {
		if seen[v] != 1 {
			t.Errorf("event %d reached the group %d times, want once", v, seen[v])
		}
	}
	if st := pub.Stats(); st.Delivered != 2*n {
		t.Errorf("delivered %d frames, want %d", st.Delivered, 2*n)
	}
}

// TestOrderWithSmallBuffer pushes many events through a small window, so
// credits go back and forth all the time.
func TestOrderWithSmallBuffer(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 2)
	pub := newPub(t, nodes[0])
	s := newSub(t, nodes[1], "small", subscriber.WithBuffer(4))
	b := collect(s, "n")
	waitSubscribers(t, nodes[0], 1)
	const n = 5000
	publish(t, pub, "n", seq(0, n)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("publisher %+v subscriber %+v", pub.Stats(), s.Stats())
		}
	})
	waitLen(t, b, n)
	if _, vals := b.snapshot(); !slices.Equal(vals, seq(0, n)) {
		t.Error("events arrived out of order")
	}
	if st := s.Stats(); st.Overflow != 0 {
		t.Errorf("overflow %d: the publisher exceeded its window", st.Overflow)
	}
}

// TestSlowSubscriberBounded: a subscriber whose handler blocks holds at
// most its buffer; Publish then waits until its ctx ends, while a fast
// subscriber alongside keeps receiving everything.
func TestSlowSubscriberBounded(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 3)
	pub := newPub(t, nodes[0])
	release := make(chan struct{})
	var slowGot atomic.Int64
	slow := newSub(t, nodes[1], "slow", subscriber.WithBuffer(8))
	slow.On("load", func(ctx context.Context, _ *subscriber.Message) {
		<-release
		slowGot.Add(1)
	})
	fast := collect(newSub(t, nodes[2], "fast"), "load")
	waitSubscribers(t, nodes[0], 2)
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	publish(t, pub, "load", seq(0, 8)...) // fills the slow subscriber's buffer
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	start := time.Now()
	err := pub.Publish(ctx, "load", 8)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish to a full subscriber returned %v, want a deadline error", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("Publish returned after %s, before its ctx ended", d)
	}
	// The fast subscriber got all 9, including the one the slow one could
	// not take.
	waitLen(t, fast, 9)
	if st := slow.Stats(); st.Received != 8 || st.Queued != 8 {
		t.Errorf("slow subscriber holds %+v, want exactly its buffer of 8", st)
	}

	close(release)
	released = true
	publish(t, pub, "load", seq(9, 50)...)
	waitLen(t, fast, 59)
	meshtest.Eventually(t, waitFor, func() error {
		if got := slowGot.Load(); got != 58 {
			return fmt.Errorf("slow subscriber handled %d, want 58", got)
		}
		return nil
	})
}

func TestDropWhenFull(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 3)
	pub := newPub(t, nodes[0])
	release := make(chan struct{})
	var slowGot atomic.Int64
	slow := newSub(t, nodes[1], "dropper", subscriber.WithBuffer(8), subscriber.WithDropWhenFull())
	slow.On("load", func(ctx context.Context, _ *subscriber.Message) {
		<-release
		slowGot.Add(1)
	})
	fast := collect(newSub(t, nodes[2], "fast"), "load")
	waitSubscribers(t, nodes[0], 2)
	defer close(release)

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for i := range 100 {
		if err := pub.Publish(ctx, "load", i); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	waitLen(t, fast, 100)
	if st := pub.Stats(); st.DroppedFull != 92 || st.Delivered != 108 {
		t.Errorf("publisher stats %+v, want 92 dropped for the full subscriber, 108 delivered", st)
	}
	if st := slow.Stats(); st.Received != 8 {
		t.Errorf("full subscriber received %d, want its buffer of 8", st.Received)
	}
}

// TestPublishStopsWaitingWhenSubscriberLeaves: a Publish waiting for a full
// subscriber gives up on it when it leaves the catalogue.
func TestPublishStopsWaitingWhenSubscriberLeaves(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 2)
	pub := newPub(t, nodes[0])
	release := make(chan struct{})
	defer close(release)
	s, err := subscriber.New("leaving", subscriber.WithMesh(nodes[1]), subscriber.WithBuffer(2))
	if err != nil {
		t.Fatal(err)
	}
	s.On("x", func(context.Context, *subscriber.Message) { <-release })
	waitSubscribers(t, nodes[0], 1)
	publish(t, pub, "x", 1, 2)

	errc := make(chan error, 1)
	go func() { errc <- pub.Publish(context.Background(), "x", 3) }()
	select {
	case err := <-errc:
		t.Fatalf("Publish did not wait for the full subscriber: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	s.Close(ctx) // the handler is blocked: Close gives up, but the subscriber is gone
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Publish still waits for a subscriber that left")
	}
	if st := pub.Stats(); st.Failed != 1 || st.Delivered != 2 {
		t.Errorf("stats %+v, want 2 delivered and 1 failed", st)
	}
}

func TestPublisherClosesAndComesBack(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 2)
	s := newSub(t, nodes[1], "listener")
	b := collect(s, "status")
	p1, err := publisher.New("svc", publisher.WithMesh(nodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, nodes[0], 1)
	publish(t, p1, "status", 1, 2)
	waitLen(t, b, 2)
	if err := p1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p1.Publish(context.Background(), "status", 3); !errors.Is(err, publisher.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	meshtest.Eventually(t, waitFor, func() error {
		for _, c := range nodes[1].View().Components {
			if c.Kind == mesh.KindPublisher {
				return errors.New("closed publisher still in the catalogue")
			}
		}
		return nil
	})

	p2 := newPub(t, nodes[0])
	publish(t, p2, "status", 4, 5)
	waitLen(t, b, 4)
	if _, vals := b.snapshot(); !slices.Equal(vals, []int{1, 2, 4, 5}) {
		t.Errorf("received %v, want [1 2 4 5]", vals)
	}
}

func TestPublishErrors(t *testing.T) {
	meshtest.CheckGoroutines(t)
	n := meshtest.Node(t)
	pub := newPub(t, n)
	ctx := context.Background()
	for _, topic := range []string{"", "a..b", "a.*", "a.**", ".a"} {
		if err := pub.Publish(ctx, topic, 1); !errors.Is(err, publisher.ErrInvalidTopic) {
			t.Errorf("Publish(%q) = %v, want ErrInvalidTopic", topic, err)
		}
	}
	if err := pub.Publish(ctx, "ok", make(chan int)); !errors.Is(err, publisher.ErrEncode) {
		t.Errorf("Publish(chan) = %v, want ErrEncode", err)
	}
	if st := pub.Stats(); st.Published != 0 {
		t.Errorf("published %d, want 0 after errors only", st.Published)
	}
	// A payload larger than the node's frame limit is refused, not lost
	// silently.
	small := meshtest.Node(t, mesh.WithMaxFrame(4096), mesh.WithSeeds(n.Addr()))
	meshtest.WaitMembers(t, []*mesh.Node{n, small}, 2)
	watchFailures(t, n, small)
	sp := newPub(t, small)
	collect(newSub(t, small, "big"), "big")
	waitSubscribers(t, small, 1)
	if err := sp.Publish(ctx, "big", make([]byte, 8192)); err == nil {
		t.Error("Publish of a payload over the frame limit succeeded")
	}
}
