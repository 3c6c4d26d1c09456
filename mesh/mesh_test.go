package mesh_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/internal/wire"
	"github.com/warrenmesh/warren/mesh"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv("WARREN_MESH_CHILD"); addr != "" {
		runChild(addr)
		return
	}
	meshtest.SafeEnv()
	os.Exit(m.Run())
}

// runChild is a node in a separate process: it joins the seed, registers a
// component, reports "ready", and waits to be killed.
func runChild(seed string) {
	n, err := mesh.New(mesh.WithName("child"), mesh.WithBindAddr("127.0.0.1:0"), mesh.WithMDNS(false),
		mesh.WithSeeds(seed), mesh.WithGossipConfig(meshtest.FastGossip))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if _, err := n.Register(mesh.Component{Kind: mesh.KindResponder, Name: "child-svc", Handles: []string{"x"}}, nopHandler{}); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("ready", n.ID())
	time.Sleep(time.Minute) // the parent kills us long before
	os.Exit(0)
}

type nopHandler struct{}

func (nopHandler) HandleFrame(string, *wire.Frame) {}
func (nopHandler) PeerDown(string)                 {}

// countHandler counts frames and peer-down notices.
type countHandler struct {
	frames atomic.Int64
	downs  atomic.Int64
	mu     sync.Mutex
	last   []byte
}

func (h *countHandler) HandleFrame(_ string, f *wire.Frame) {
	h.mu.Lock()
	h.last = append(h.last[:0], f.Payload...)
	h.mu.Unlock()
	h.frames.Add(1)
}
func (h *countHandler) PeerDown(string) { h.downs.Add(1) }

func hasComponent(n *mesh.Node, name string) bool {
	for _, c := range n.Catalogue() {
		if c.Name == name {
			return true
		}
	}
	return false
}

func TestFiveNodesConvergeAndShareCatalogue(t *testing.T) {
	meshtest.CheckGoroutines(t)
	// Push/pull (anti-entropy) is pushed out of the way, so the change must
	// travel by gossip broadcast alone.
	// Each node seeds every earlier one, so membership forms by the joins'
	// own push/pulls: with anti-entropy off, a membership that must also
	// spread by broadcast did not always converge in time on a loaded
	// machine (a pre-existing flake, seen about once in 20 runs under load).
	slow := mesh.WithGossipConfig(func(c *memberlist.Config) {
		meshtest.FastGossip(c)
		c.PushPullInterval = time.Minute
	})
	var nodes []*mesh.Node
	for i := range 5 {
		var seeds []string
		for _, n := range nodes[:i] {
			seeds = append(seeds, n.Addr())
		}
		nodes = append(nodes, meshtest.Node(t, slow, mesh.WithSeeds(seeds...)))
	}
	meshtest.WaitMembers(t, nodes, 5)
	start := time.Now()
	if _, err := nodes[3].Register(mesh.Component{Kind: mesh.KindResponder, Name: "validation", Handles: []string{"validate"}}, nopHandler{}); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		for _, n := range nodes {
			if !hasComponent(n, "validation") {
				return fmt.Errorf("%s does not see the component yet", n.ID())
			}
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("component reached all 5 nodes in %s", took)
	if took > 1500*time.Millisecond { // typically ~100 ms, even under -race
		t.Fatalf("catalogue change took %s to reach 5 nodes", took)
	}
	for _, n := range nodes {
		for _, c := range n.Catalogue() {
			if c.Name == "validation" && (c.Node != nodes[3].ID() || c.Addr != nodes[3].DataAddr() || c.Kind != mesh.KindResponder) {
				t.Fatalf("%s sees a wrong entry: %+v", n.ID(), c)
			}
		}
	}
}

func TestClosedNodeIsSeenGone(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 3)
	if _, err := nodes[2].Register(mesh.Component{Kind: mesh.KindPublisher, Name: "leaver"}, nopHandler{}); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if !hasComponent(nodes[0], "leaver") {
			return errors.New("component not seen")
		}
		return nil
	})
	var events sync.Map
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes[0].Watch(ctx, func(e mesh.Event) { events.Store(e.Type, e) })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	start := time.Now()
	if err := nodes[2].Close(ctx2); err != nil {
		t.Fatal(err)
	}
	meshtest.WaitMembers(t, nodes[:2], 2)
	if hasComponent(nodes[0], "leaver") {
		t.Fatal("component of a closed node still in the catalogue")
	}
	t.Logf("departure seen in %s", time.Since(start))
	meshtest.Eventually(t, 2*time.Second, func() error {
		if _, ok := events.Load(mesh.NodeLeft); !ok {
			return errors.New("no NodeLeft event")
		}
		if _, ok := events.Load(mesh.ComponentRemoved); !ok {
			return errors.New("no ComponentRemoved event")
		}
		return nil
	})
	if err := nodes[2].Close(ctx2); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestDeadProcessRemovedByFailureDetection(t *testing.T) {
	n := meshtest.Node(t)
	var failed atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.Watch(ctx, func(e mesh.Event) {
		if e.Type == mesh.NodeFailed {
			failed.Store(true)
		}
	})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "WARREN_MESH_CHILD="+n.Addr())
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(out)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "ready") {
		t.Fatalf("child did not start: %q", lines.Text())
	}
	meshtest.Eventually(t, 10*time.Second, func() error {
		if !hasComponent(n, "child-svc") || len(n.Members()) != 2 {
			return errors.New("child not seen yet")
		}
		return nil
	})
	start := time.Now()
	cmd.Process.Signal(os.Kill)
	meshtest.Eventually(t, 15*time.Second, func() error {
		if len(n.Members()) != 1 || hasComponent(n, "child-svc") {
			return errors.New("dead child still listed")
		}
		return nil
	})
	t.Logf("killed process removed after %s", time.Since(start))
	meshtest.Eventually(t, 3*time.Second, func() error {
		if !failed.Load() {
			return errors.New("no NodeFailed event")
		}
		return nil
	})
}

func TestDroppedConnectionIsReestablished(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	a, b := nodes[0], nodes[1]
	hb := &countHandler{}
	pb, err := b.Register(mesh.Component{Kind: mesh.KindSubscriber, Name: "sink"}, hb)
	if err != nil {
		t.Fatal(err)
	}
	ha := &countHandler{}
	pa, err := a.Register(mesh.Component{Kind: mesh.KindPublisher, Name: "source"}, ha)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	send := func() error {
		return pa.Send(ctx, b.ID(), wire.KindEvent, &wire.Header{To: pb.ID(), Name: "t"}, []byte("hello"))
	}
	if err := send(); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if hb.frames.Load() != 1 {
			return errors.New("frame not received")
		}
		return nil
	})
	_, before, _ := mesh.ConnAddrs(a, b.ID())
	if !mesh.DropConn(a, b.ID()) {
		t.Fatal("no connection to drop")
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if ha.downs.Load() == 0 {
			return errors.New("no PeerDown after the drop")
		}
		if _, _, ok := mesh.ConnAddrs(a, b.ID()); !ok {
			return errors.New("not reconnected yet")
		}
		return nil
	})
	if err := send(); err != nil {
		t.Fatalf("send after reconnect: %v", err)
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if hb.frames.Load() != 2 {
			return errors.New("frame after reconnect not received")
		}
		return nil
	})
	if view := a.View(); view.Unreachable[b.ID()] {
		t.Fatal("peer still marked unreachable after reconnecting")
	}
	_, after, _ := mesh.ConnAddrs(a, b.ID())
	t.Logf("connection %s replaced by %s", before, after)
}

func TestOneConnectionPerPair(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	a, b := nodes[0], nodes[1]
	ha, hb := &countHandler{}, &countHandler{}
	pa, _ := a.Register(mesh.Component{Kind: mesh.KindSubscriber, Name: "a"}, ha)
	pb, _ := b.Register(mesh.Component{Kind: mesh.KindSubscriber, Name: "b"}, hb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Both sides dial at the same moment, from many goroutines.
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(2)
		go func() { defer wg.Done(); pa.Send(ctx, b.ID(), wire.KindEvent, &wire.Header{To: pb.ID()}, nil) }()
		go func() { defer wg.Done(); pb.Send(ctx, a.ID(), wire.KindEvent, &wire.Header{To: pa.ID()}, nil) }()
	}
	wg.Wait()
	meshtest.Eventually(t, 5*time.Second, func() error {
		if ha.frames.Load() != 16 || hb.frames.Load() != 16 {
			return fmt.Errorf("frames: a=%d b=%d, want 16 each", ha.frames.Load(), hb.frames.Load())
		}
		return nil
	})
	la, ra, ok1 := mesh.ConnAddrs(a, b.ID())
	lb, rb, ok2 := mesh.ConnAddrs(b, a.ID())
	if !ok1 || !ok2 || la != rb || ra != lb {
		t.Fatalf("not one shared connection: a %s->%s, b %s->%s", la, ra, lb, rb)
	}
}

func TestLocalDelivery(t *testing.T) {
	meshtest.CheckGoroutines(t)
	n := meshtest.Node(t)
	h := &countHandler{}
	p, _ := n.Register(mesh.Component{Kind: mesh.KindSubscriber, Name: "self"}, h)
	if err := p.Send(context.Background(), n.ID(), wire.KindEvent, &wire.Header{To: p.ID()}, []byte("me")); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 2*time.Second, func() error {
		if h.frames.Load() != 1 {
			return errors.New("not delivered locally")
		}
		return nil
	})
}

func TestMalformedFrameClosesOnlyThatConnection(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	a, b := nodes[0], nodes[1]
	hb := &countHandler{}
	pb, _ := b.Register(mesh.Component{Kind: mesh.KindSubscriber, Name: "sink"}, hb)
	pa, _ := a.Register(mesh.Component{Kind: mesh.KindPublisher, Name: "src"}, &countHandler{})
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0xff, 0xff, 0xff, 0xff, 1, 1}, // oversized length
		{0, 0, 0, 3, 9, 1, 0},          // wrong version
		{0, 0, 0, 2, 1},                // truncated, then stall
	} {
		c, err := net.Dial("tcp", b.DataAddr())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(junk)
		c.SetReadDeadline(time.Now().Add(8 * time.Second))
		buf := make([]byte, 64)
		_, err = c.Read(buf)
		c.Close()
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("junk %x: connection not closed by the node (err %v)", junk, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pa.Send(ctx, b.ID(), wire.KindEvent, &wire.Header{To: pb.ID()}, nil); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if hb.frames.Load() != 1 {
			return errors.New("healthy peer affected")
		}
		return nil
	})
}

func TestAwait(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		time.Sleep(50 * time.Millisecond)
		nodes[1].Register(mesh.Component{Kind: mesh.KindResponder, Name: "late", Handles: []string{"x"}}, nopHandler{})
	}()
	if err := nodes[0].Await(ctx, func(cs []mesh.Component) bool {
		for _, c := range cs {
			if c.Name == "late" {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := nodes[0].Await(short, func([]mesh.Component) bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Await = %v, want deadline exceeded", err)
	}
}

// replyHandler answers every request frame with Reply on the connection it
// came in on, and keeps the last request's Writer.
type replyHandler struct {
	port *mesh.Port
	mu   sync.Mutex
	back *wire.Writer
	errs chan error
}

func (h *replyHandler) HandleFrame(from string, f *wire.Frame) {
	if f.Kind != wire.KindRequest {
		return
	}
	h.mu.Lock()
	h.back = f.Back
	h.mu.Unlock()
	back, hdr, payload := f.Back, wire.Header{To: f.Header.From, Seq: f.Header.Seq}, append([]byte(nil), f.Payload...)
	go func() { // never block a read loop
		h.errs <- h.port.Reply(context.Background(), back, from, &hdr, payload, false)
	}()
}
func (h *replyHandler) PeerDown(string) {}

// Reply answers on the connection the request came in on, from another node
// and from the node itself; on a connection that has closed since, it
// fails with ErrUnreachable.
func TestReplyGoesBackOnTheIncomingConnection(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	a, b := nodes[0], nodes[1]
	hb := &replyHandler{errs: make(chan error, 4)}
	pb, err := b.Register(mesh.Component{Kind: mesh.KindResponder, Name: "replier", Handles: []string{"x"}}, hb)
	if err != nil {
		t.Fatal(err)
	}
	hb.port = pb
	ha := &countHandler{}
	pa, err := a.Register(mesh.Component{Kind: mesh.KindRequester, Name: "asker"}, ha)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hs := &replyHandler{errs: make(chan error, 4)}
	ps, err := a.Register(mesh.Component{Kind: mesh.KindResponder, Name: "self-replier", Handles: []string{"y"}}, hs)
	if err != nil {
		t.Fatal(err)
	}
	hs.port = ps
	for i, to := range []struct {
		node string
		id   uint64
		h    *replyHandler
	}{{b.ID(), pb.ID(), hb}, {a.ID(), ps.ID(), hs}} {
		if err := pa.Send(ctx, to.node, wire.KindRequest, &wire.Header{To: to.id, Seq: uint64(i + 1), Name: "x"}, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if err := <-to.h.errs; err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		meshtest.Eventually(t, 5*time.Second, func() error {
			if ha.frames.Load() != int64(i+1) {
				return fmt.Errorf("%d replies received, want %d", ha.frames.Load(), i+1)
			}
			return nil
		})
	}
	hb.mu.Lock()
	stale := hb.back
	hb.mu.Unlock()
	if !mesh.DropConn(b, a.ID()) {
		t.Fatal("no connection to drop")
	}
	if err := pb.Reply(ctx, stale, a.ID(), &wire.Header{To: pa.ID(), Seq: 9}, nil, true); !errors.Is(err, mesh.ErrUnreachable) {
		t.Fatalf("reply on a dropped connection: %v, want ErrUnreachable", err)
	}
}
