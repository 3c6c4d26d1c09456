package mesh

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/warrenmesh/warren/internal/wire"
)

// pairForVerdict starts two joined nodes, a component on b, and a's data
// connection to b; it returns them, that connection and a's events
// (recorded).
func pairForVerdict(t *testing.T) (a, b *Node, c *conn, events func() []Event) {
	t.Helper()
	b, err := New(WithName("b"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	a, err = New(WithName("a"), WithSeeds(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	if _, err := b.Register(Component{Kind: KindResponder, Name: "svc", Handles: []string{"x"}}, nopHandler{}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var evs []Event
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	a.Watch(ctx, func(e Event) {
		mu.Lock()
		evs = append(evs, e)
		mu.Unlock()
	})
	waitUntil(t, 10*time.Second, func() error {
		if !seesResponder(a, b.ID()) {
			return fmt.Errorf("a does not see b's responder")
		}
		return nil
	})
	c, err = a.connTo(context.Background(), b.ID())
	if err != nil {
		t.Fatal(err)
	}
	return a, b, c, func() []Event {
		mu.Lock()
		defer mu.Unlock()
		return append([]Event(nil), evs...)
	}
}

type nopHandler struct{}

func (nopHandler) HandleFrame(string, *wire.Frame) {}
func (nopHandler) PeerDown(string)                 {}

func seesResponder(n *Node, node string) bool {
	for _, c := range n.View().Components {
		if c.Node == node && c.Kind == KindResponder {
			return true
		}
	}
	return false
}

func waitUntil(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gossipNode is what memberlist hands NotifyLeave/NotifyJoin for n.
func gossipNode(n *Node) *memberlist.Node {
	host, port, _ := net.SplitHostPort(n.Addr())
	p, _ := strconv.Atoi(port)
	return &memberlist.Node{Name: n.ID(), Addr: net.ParseIP(host), Port: uint16(p), Meta: []byte(metaV1 + n.dataAddr)}
}

func countEvents(evs []Event, typ EventType, node string) int {
	k := 0
	for _, e := range evs {
		if e.Type == typ && e.Node == node {
			k++
		}
	}
	return k
}

// A failure verdict from gossip about a peer that still answers on its data
// connection (gossip erred: lost probes, a starved process) keeps the peer,
// its components and the connection; when gossip counts it alive again, no
// spurious join is reported.
func TestFalseFailureVerdictKeepsLivePeer(t *testing.T) {
	a, b, c, recorded := pairForVerdict(t)
	(*events)(a).NotifyLeave(gossipNode(b))
	time.Sleep(verdictPingWait + 300*time.Millisecond)
	if !seesResponder(a, b.ID()) {
		t.Fatal("b's responder left the view though b answers on its data connection")
	}
	if a.liveConn(b.ID()) != c {
		t.Fatal("the data connection to b was replaced or closed")
	}
	if n := countEvents(recorded(), NodeFailed, b.ID()); n != 0 {
		t.Fatalf("%d NodeFailed events for a live peer", n)
	}
	// Gossip changes its mind (b refuted the verdict). The watch may have
	// started after b's first join, so joins are counted from here.
	joinsBefore := countEvents(recorded(), NodeJoined, b.ID())
	(*events)(a).NotifyJoin(gossipNode(b))
	a.catMu.Lock()
	_, doubted := a.doubted[b.ID()]
	a.catMu.Unlock()
	if doubted {
		t.Fatal("b still doubted after gossip counts it alive")
	}
	time.Sleep(200 * time.Millisecond) // events are delivered asynchronously
	evs := recorded()
	if n := countEvents(evs, NodeJoined, b.ID()) - joinsBefore; n != 0 {
		t.Fatalf("%d NodeJoined events for b after gossip took its verdict back, want none (it never left): %v", n, evs)
	}
	if !seesResponder(a, b.ID()) {
		t.Fatal("b's responder not in the view")
	}
}

// A peer that gossip declares failed and that does not answer a ping on
// its data connection (frozen, or cut off) departs as before.
func TestFailureVerdictAppliedWhenPeerSilent(t *testing.T) {
	a, b, c, recorded := pairForVerdict(t)
	b.ignorePings.Store(true)
	start := time.Now()
	(*events)(a).NotifyLeave(gossipNode(b))
	waitUntil(t, 5*time.Second, func() error {
		if seesResponder(a, b.ID()) {
			return fmt.Errorf("b's responder still in the view")
		}
		return nil
	})
	if d := time.Since(start); d < verdictPingWait-50*time.Millisecond {
		t.Errorf("b departed after %s, before the ping had time to be answered", d)
	}
	waitUntil(t, 5*time.Second, func() error {
		if countEvents(recorded(), NodeFailed, b.ID()) != 1 {
			return fmt.Errorf("no NodeFailed event for b")
		}
		return nil
	})
	// (b is alive in fact, so it may connect again: only the old
	// connection must be closed.)
	if !c.closed.Load() {
		t.Fatal("the connection to the departed peer is still open")
	}
}

// A peer that dials again while we keep a connection to it has lost its
// end of that connection (closed during a partition, its FIN lost): the
// connection is probed and, when it does not answer, closed, so the new
// dial succeeds instead of being refused for as long as TCP takes to
// notice (seconds after a partition heals).
func TestStaleConnectionGivesWayToNewDial(t *testing.T) {
	a, b, old, _ := pairForVerdict(t)
	var bOld *conn
	waitUntil(t, 5*time.Second, func() error {
		if bOld = b.liveConn(a.ID()); bOld == nil {
			return fmt.Errorf("b has no connection to a")
		}
		return nil
	})
	// a forgets its end without closing it, and no longer answers on it:
	// to b the connection looks open, as after a lost FIN.
	a.ignorePings.Store(true)
	defer a.ignorePings.Store(false)
	a.peerMu.Lock()
	a.peers[b.ID()].conn.CompareAndSwap(old, nil)
	a.peerMu.Unlock()

	start := time.Now()
	var fresh *conn
	waitUntil(t, 5*time.Second, func() error {
		c, err := a.connTo(context.Background(), b.ID())
		if err != nil {
			return err
		}
		if c == old {
			return fmt.Errorf("still the old connection")
		}
		fresh = c
		return nil
	})
	t.Logf("new connection after %s", time.Since(start).Round(time.Millisecond))
	if !bOld.closed.Load() {
		t.Fatal("b kept the connection that no longer answers")
	}
	if b.liveConn(a.ID()) == bOld {
		t.Fatal("b still uses the old connection")
	}
	if fresh == nil || fresh.closed.Load() {
		t.Fatal("the new connection is not open")
	}
	old.close()
}
