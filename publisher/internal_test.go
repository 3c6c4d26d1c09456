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
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	p, err := New("unit", WithMesh(nodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	release := make(chan struct{})
	s, err := subscriber.New("slow", subscriber.WithMesh(nodes[1]), subscriber.WithBuffer(4))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	}()
	s.On("t", func(context.Context, *subscriber.Message) { <-release })
	defer close(release)
	meshtest.Eventually(t, 10*time.Second, func() error {
		for _, c := range nodes[0].View().Components {
			if c.Kind == mesh.KindSubscriber {
				return nil
			}
		}
		return fmt.Errorf("subscriber not visible")
	})
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
	if got := tg.credits.Load(); got != 3 {
		t.Errorf("credits %d after reset and one event, want 3", got)
	}
	// Stale or hostile credit frames never raise the window past its size.
	h.HandleFrame(nodes[1].ID(), &wire.Frame{Kind: wire.KindCredit, Header: wire.Header{From: tg.key.id, Seq: 1 << 40}})
	if got := tg.credits.Load(); got != 4 {
		t.Errorf("credits %d after a huge credit frame, want the window of 4", got)
	}
	h.HandleFrame("stranger", &wire.Frame{Kind: wire.KindCredit, Header: wire.Header{From: 99, Seq: 1}}) // ignored
}
