package mesh

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/discovery"
)

// fakeDiscoverer reports what the test tells it to, when it tells it to.
type fakeDiscoverer struct {
	reports chan []string
	acks    chan struct{} // one per report, once found has returned
}

func (f *fakeDiscoverer) report(addrs ...string) {
	f.reports <- addrs
	<-f.acks
}

func (f *fakeDiscoverer) String() string { return "fake" }

func (f *fakeDiscoverer) Run(ctx context.Context, _ discovery.Self, found func([]string)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case a := <-f.reports:
			found(a)
			f.acks <- struct{}{}
		}
	}
}

func candidateAddrs(n *Node) map[string]bool {
	n.joinMu.Lock()
	defer n.joinMu.Unlock()
	m := map[string]bool{}
	for a := range n.candidates {
		m[a] = true
	}
	return m
}

// closedLoopbackAddr returns a loopback address nothing listens on.
func closedLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// An address discovery stops reporting is forgotten once it is not a
// member; a member's address is kept; re-reported addresses stay.
func TestCandidatesNoLongerReportedAreForgotten(t *testing.T) {
	const ttl = 300 * time.Millisecond
	peer, err := New(WithName("peer"))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close(context.Background())
	fake := &fakeDiscoverer{reports: make(chan []string), acks: make(chan struct{})}
	n, err := New(WithName("n"), WithDiscovery(fake), func(c *config) { c.candidateTTL = ttl })
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())

	gone, kept := closedLoopbackAddr(t), closedLoopbackAddr(t)
	fake.report(gone, kept, peer.Addr())
	if c := candidateAddrs(n); !c[gone] || !c[kept] || !c[peer.Addr()] {
		t.Fatalf("candidates %v, want all three reported addresses", c)
	}

	// kept is re-reported every 50 ms; gone is not. Bounded: 40 rounds.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for range 40 {
			select {
			case <-stop:
				return
			case <-tk.C:
				fake.report(kept)
			}
		}
	})
	deadline := time.Now().Add(2 * time.Second)
	for candidateAddrs(n)[gone] && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	c := candidateAddrs(n)
	close(stop)
	wg.Wait()
	if c[gone] {
		t.Fatalf("%s still a candidate 2 s after its last report (TTL %s)", gone, ttl)
	}
	if !c[kept] {
		t.Fatalf("%s, reported every 50 ms, was forgotten", kept)
	}
	if !c[peer.Addr()] {
		t.Fatalf("member %s was forgotten though it is a member", peer.Addr())
	}
	if n.numMembers() != 2 {
		t.Fatalf("%d members, want 2", n.numMembers())
	}

	// Reported again, it is a candidate again.
	fake.report(gone)
	if !candidateAddrs(n)[gone] {
		t.Fatalf("%s not a candidate after being reported again", gone)
	}
}
