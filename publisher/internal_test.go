package publisher

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/internal/wire"
	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/subscriber"
)

// TestPeerDownResetsWindow: when the connection to a subscriber's node
// drops, the events in flight will never be credited, so the window starts
// afresh; credits arriving later never push it past its size.
func TestPeerDownResetsWindow(t *testing.T) {
	p, nodes := unitCluster(t, 2)
	release := make(chan struct{})
	smallSubscriber(t, nodes[1], func() { <-release })
	defer close(release) // before the subscriber's Close (a cleanup)
	waitSubscribers(t, nodes[0], 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 4 {
		if err := p.Publish(ctx, "t", i); err != nil {
			t.Fatal(err)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	if err := p.Publish(short, "t", 4); err == nil {
		t.Fatal("Publish beyond the window did not wait")
	}
	cancelShort()

	h := (*handler)(p)
	h.PeerDown(nodes[1].ID())
	if err := p.Publish(ctx, "t", 5); err != nil {
		t.Fatalf("Publish after the window reset: %v", err)
	}
	p.smu.Lock()
	var tg *target
	for _, x := range p.subs {
		tg = x
	}
	p.smu.Unlock()
	if got, _ := unpackCredits(tg.credits.Load()); got != 3 {
		t.Errorf("credits %d after reset and one event, want 3", got)
	}
	// Stale or hostile credit frames never raise the window past its size.
	h.HandleFrame(nodes[1].ID(), &wire.Frame{Kind: wire.KindCredit, Header: wire.Header{From: tg.key.id, Seq: 1 << 40}})
	if got, _ := unpackCredits(tg.credits.Load()); got != 4 {
		t.Errorf("credits %d after a huge credit frame, want the window of 4", got)
	}
	h.HandleFrame("stranger", &wire.Frame{Kind: wire.KindCredit, Header: wire.Header{From: 99, Seq: 1}}) // ignored
}

// Event and byte credits: both bound what is outstanding, an event larger
// than the byte window still goes once at most half of it is outstanding,
// and no credit frame raises either past its window.
func TestTargetByteCredits(t *testing.T) {
	tg := &target{window: 4, byteWindow: 100}
	tg.reset()
	credits := func() (int64, int64) { return unpackCredits(tg.credits.Load()) }
	for i := range 3 {
		if !tg.take(30) {
			t.Fatalf("take(30) #%d refused", i+1)
		}
	}
	if ev, by := credits(); ev != 1 || by != 10 {
		t.Fatalf("credits %d events, %d bytes after 3 x 30 bytes; want 1, 10", ev, by)
	}
	if tg.take(30) {
		t.Fatal("take(30) granted with 10 byte credits")
	}
	if !tg.take(10) {
		t.Fatal("take(10) refused with 1 event and 10 byte credits")
	}
	if tg.take(0) {
		t.Fatal("take granted with no event credit")
	}
	tg.give(4, 100)
	if ev, by := credits(); ev != 4 || by != 100 {
		t.Fatalf("credits %d, %d after all returned; want 4, 100", ev, by)
	}

	// Larger than the window: allowed while at least half the window is free.
	if !tg.take(500) {
		t.Fatal("an event larger than the byte window was refused with nothing outstanding")
	}
	if ev, by := credits(); ev != 3 || by != -400 {
		t.Fatalf("credits %d, %d after a 500-byte event; want 3, -400", ev, by)
	}
	if tg.take(1) {
		t.Fatal("take(1) granted while 500 bytes are outstanding of 100")
	}
	tg.give(1, 500)
	first := tg.take(60)
	second := tg.take(60)
	if !first || second {
		t.Fatal("want exactly one 60-byte event granted (the second needs 50 free bytes, 40 are)")
	}
	tg.give(1<<40, 1<<40) // hostile: clamped
	if ev, by := credits(); ev != 4 || by != 100 {
		t.Fatalf("credits %d, %d after a huge credit frame; want 4, 100", ev, by)
	}
	tg.give(-5, -5) // ignored
	if ev, by := credits(); ev != 4 || by != 100 {
		t.Fatalf("credits %d, %d after a negative credit; want 4, 100", ev, by)
	}

	// Without a byte window only events count.
	nb := &target{window: 2}
	nb.reset()
	took := []bool{nb.take(1 << 30), nb.take(1 << 30), nb.take(1)}
	if !took[0] || !took[1] || took[2] {
		t.Fatal("without a byte window, want exactly 2 events of any size")
	}
	nb.give(2, 1<<30)
	if ev, _ := unpackCredits(nb.credits.Load()); ev != 2 {
		t.Fatalf("%d event credits after return, want 2", ev)
	}
	// The widest windows still pack.
	w := &target{window: maxWindow, byteWindow: maxByteWindow}
	w.reset()
	if ev, by := unpackCredits(w.credits.Load()); ev != maxWindow || by != maxByteWindow {
		t.Fatalf("widest windows unpack as %d, %d", ev, by)
	}
	if !w.take(16 << 20) {
		t.Fatal("take refused on the widest windows")
	}
	if ev, by := unpackCredits(w.credits.Load()); ev != maxWindow-1 || by != maxByteWindow-16<<20 {
		t.Fatalf("widest windows after one event: %d, %d", ev, by)
	}
}

// TestPublishEndedBeforeDialGivesCreditsBack: subscribers not yet connected
// are sent to after the connected ones, each dialled in turn; when ctx ends
// while Publish dials the first, the others get their credit back, so no
// window shrinks.
func TestPublishEndedBeforeDialGivesCreditsBack(t *testing.T) {
	p, nodes := unitCluster(t, 3)
	got := make(chan struct{}, 16)
	for _, n := range nodes[1:] {
		smallSubscriber(t, n, func() { got <- struct{}{} })
	}
	waitSubscribers(t, nodes[0], 2)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Publish(ended, "t", 0); err == nil {
		t.Fatal("Publish with an ended context to subscribers not yet dialled succeeded")
	}
	p.smu.Lock()
	var targets []*target
	for _, x := range p.subs {
		targets = append(targets, x)
	}
	p.smu.Unlock()
	if len(targets) != 2 {
		t.Fatalf("%d targets, want 2", len(targets))
	}
	for _, tg := range targets {
		if ev, _ := unpackCredits(tg.credits.Load()); ev != 4 {
			t.Errorf("target %v has %d event credits after the failed Publish, want its window of 4", tg.key, ev)
		}
	}
	ctx, cancelOK := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelOK()
	if err := p.Publish(ctx, "t", 1); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case <-got:
		case <-ctx.Done():
			t.Fatal("a subscriber did not get the event published once connected")
		}
	}
}

// unitCluster is k nodes and a publisher on the first, closed (and checked
// for leaked goroutines) at cleanup.
func unitCluster(t *testing.T, k int) (*Publisher, []*mesh.Node) {
	t.Helper()
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, k)
	p, err := New("unit", WithMesh(nodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p, nodes
}

// smallSubscriber subscribes to "t" on node with a buffer of 4 events,
// running h for each, and closes at cleanup.
func smallSubscriber(t *testing.T, node *mesh.Node, h func()) {
	t.Helper()
	s, err := subscriber.New("s", subscriber.WithMesh(node), subscriber.WithBuffer(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	s.On("t", func(context.Context, *subscriber.Message) { h() })
}

// waitSubscribers waits until node sees k subscribers.
func waitSubscribers(t *testing.T, node *mesh.Node, k int) {
	t.Helper()
	meshtest.Eventually(t, 10*time.Second, func() error {
		n := 0
		for _, c := range node.View().Components {
			if c.Kind == mesh.KindSubscriber {
				n++
			}
		}
		if n != k {
			return fmt.Errorf("%d subscribers visible, want %d", n, k)
		}
		return nil
	})
}
