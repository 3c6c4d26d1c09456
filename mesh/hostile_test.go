//go:build linux

package mesh_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/internal/wire"
	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
)

// Hostile input against a live node: its gossip port (UDP and TCP) and its
// data port get junk, truncated and oversized messages, stalled
// connections and a flood of connections, while a healthy requester on
// another node keeps calling a responder on the attacked node. Each bad
// input must be refused or timed out with a logged reason, memory and file
// descriptors must stay bounded, and the healthy traffic must not notice.

// logRec keeps the lines a node logs, to check that refusals say why.
type logRec struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRec) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) > 20000 {
		r.lines = r.lines[10000:]
	}
	r.lines = append(r.lines, strings.TrimSpace(string(p)))
	return len(p), nil
}

func (r *logRec) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// find returns the first line containing every part, or "".
func (r *logRec) find(parts ...string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return l
		}
	}
	return ""
}

// waitLog waits for a log line containing every part.
func (r *logRec) waitLog(t *testing.T, timeout time.Duration, parts ...string) string {
	t.Helper()
	var line string
	meshtest.Eventually(t, timeout, func() error {
		if line = r.find(parts...); line == "" {
			return fmt.Errorf("no log line with %q", parts)
		}
		return nil
	})
	return line
}

// victim is an attacked node with a responder, and a healthy requester on
// another node calling it all along.
type victim struct {
	n    *mesh.Node
	log  *logRec
	peer *mesh.Node

	ok, failed atomic.Int64
	lastOK     atomic.Int64 // unix nanos
	maxGap     atomic.Int64
	stop       chan struct{}
	done       chan struct{}
	firstErr   atomic.Value
}

func newVictim(t *testing.T) *victim {
	v := &victim{log: &logRec{}, stop: make(chan struct{}), done: make(chan struct{})}
	v.n = meshtest.Node(t, mesh.WithLogger(v.log.logger()))
	v.peer = meshtest.Node(t, mesh.WithSeeds(v.n.Addr()))
	meshtest.WaitMembers(t, []*mesh.Node{v.n, v.peer}, 2)
	resp, err := responder.New("victim", responder.WithMesh(v.n))
	if err != nil {
		t.Fatal(err)
	}
	responder.Handle(resp, "echo", func(ctx context.Context, s string) (string, error) { return s, nil })
	req, err := requester.New("healthy", requester.WithMesh(v.peer), requester.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req.Close(ctx)
		resp.Close(ctx)
	})
	if _, err := requester.Call[string](context.Background(), req, "echo", "first"); err != nil {
		t.Fatal(err)
	}
	v.lastOK.Store(time.Now().UnixNano())
	go func() {
		defer close(v.done)
		for i := 0; ; i++ {
			select {
			case <-v.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			got, err := requester.Call[string](context.Background(), req, "echo", fmt.Sprint(i))
			if err != nil || got != fmt.Sprint(i) {
				v.failed.Add(1)
				v.firstErr.CompareAndSwap(nil, fmt.Sprintf("%v (got %q)", err, got))
				continue
			}
			now := time.Now().UnixNano()
			if gap := now - v.lastOK.Swap(now); gap > v.maxGap.Load() {
				v.maxGap.Store(gap)
			}
			v.ok.Add(1)
		}
	}()
	t.Cleanup(v.finish)
	return v
}

func (v *victim) finish() {
	select {
	case <-v.stop:
	default:
		close(v.stop)
	}
	<-v.done
}

// check stops the healthy traffic and verifies it never noticed.
func (v *victim) check(t *testing.T) {
	t.Helper()
	v.finish()
	if v.failed.Load() > 0 || v.ok.Load() == 0 {
		t.Errorf("healthy requester: %d answered, %d failed (first: %v)", v.ok.Load(), v.failed.Load(), v.firstErr.Load())
	}
	if gap := time.Duration(v.maxGap.Load()); gap > time.Second {
		t.Errorf("healthy requester waited %s for an answer", gap)
	}
	if got := len(v.n.Members()); got != 2 {
		t.Errorf("attacked node sees %d members, want 2", got)
	}
	t.Logf("healthy requester: %d answered, 0 failed, longest wait %s", v.ok.Load(), time.Duration(v.maxGap.Load()).Round(time.Millisecond))
}

// heapWatch samples the heap while an attack runs.
type heapWatch struct {
	base, peak uint64
	stop, done chan struct{}
}

func watchHeap() *heapWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapWatch{base: ms.HeapAlloc, peak: ms.HeapAlloc, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				h.peak = max(h.peak, ms.HeapAlloc)
			}
		}
	}()
	return h
}

// end stops sampling and checks the peak and what stays after a GC.
func (h *heapWatch) end(t *testing.T, peakMax, keptMax uint64) {
	t.Helper()
	close(h.stop)
	<-h.done
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	grew := int64(ms.HeapAlloc) - int64(h.base)
	t.Logf("heap: %d KiB before, peak +%d KiB, +%d KiB after", h.base>>10, (h.peak-h.base)>>10, grew>>10)
	if h.peak-h.base > peakMax {
		t.Errorf("heap peaked %d MiB above its start, limit %d MiB", (h.peak-h.base)>>20, peakMax>>20)
	}
	if grew > int64(keptMax) {
		t.Errorf("heap kept %d MiB, limit %d MiB", grew>>20, keptMax>>20)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// memberlist message types, as on the wire.
const (
	mlPushPull = 6
	mlCompound = 7
	mlUser     = 8
)

// hugeArray is msgpack for an array that claims 2^32-1 elements.
var hugeArray = []byte{0xdd, 0xff, 0xff, 0xff, 0xff}

// TestHostileGossipUDP: junk and catalogue bombs as gossip packets. A
// single packet that claims billions of components used to make the node
// allocate hundreds of GiB and die.
func TestHostileGossipUDP(t *testing.T) {
	v := newVictim(t)
	h := watchHeap()
	c, err := net.Dial("udp", v.n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	state := mesh.StateMessage(mesh.TestState{Node: "intruder", Version: 1, Addr: "127.0.0.1:1",
		Components: []mesh.Component{{Kind: mesh.KindResponder, Name: "x", Handles: []string{"echo"}}}})
	packets := [][]byte{
		append([]byte{mlUser, 1, 0x81, 0xa1, 'c'}, hugeArray...),                        // components: 2^32-1
		append([]byte{mlUser, 1, 0x81, 0xa1, 'c', 0x91, 0x81, 0xa1, 'h'}, hugeArray...), // handles: 2^32-1
		append([]byte{mlUser, 1}, hugeArray...),                                         // a state that is an array
		append([]byte{mlUser, 2}, hugeArray...),                                         // push/pull type as a message
		append([]byte{mlUser, 1}, []byte(strings.Repeat("\x91", 1000))...),              // nested 1000 deep
		append([]byte{mlUser}, state[:len(state)/2]...),                                 // truncated state
		append([]byte{mlUser, 1}, 0xc1),                                                 // invalid msgpack
		{mlCompound, 255, 0, 10},                                                        // compound claiming 255 parts
		{mlUser},
		{},
	}
	packets = append(packets, packets...) // twice: UDP may drop one
	for range 200 {
		packets = append(packets, randomBytes(1+len(packets)%1400))
		packets = append(packets, append([]byte{mlUser, 1}, randomBytes(len(packets)%1000)...))
	}
	for _, p := range packets {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	v.log.waitLog(t, 5*time.Second, "gossip: catalogue state refused", "elements claimed")
	// The node still takes real gossip: a state from a real peer arrives.
	if _, err := v.peer.Register(mesh.Component{Kind: mesh.KindPublisher, Name: "after-attack"}, nopHandler{}); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if !hasComponent(v.n, "after-attack") {
			return errors.New("gossip from a real peer no longer arrives")
		}
		return nil
	})
	if hasComponent(v.n, "x") {
		t.Error("a state from a non-member became visible")
	}
	h.end(t, 64<<20, 8<<20)
	v.check(t)
}

// pushPull encodes a memberlist push/pull stream carrying user state us
// (memberlist's header is a msgpack map of its field names).
func pushPull(t *testing.T, us []byte, claimed int) []byte {
	hdr, err := msgpack.Marshal(map[string]any{"Nodes": 0, "UserStateLen": claimed, "Join": false})
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]byte{mlPushPull}, hdr...), us...)
}

// TestHostileGossipTCP: a push/pull carrying a catalogue bomb, junk, and a
// stream that stalls half way: the first is refused with a logged reason,
// the others are closed by memberlist's stream timeout.
func TestHostileGossipTCP(t *testing.T) {
	v := newVictim(t)
	h := watchHeap()
	send := func(b []byte, stall bool) time.Duration {
		c, err := net.Dial("tcp", v.n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.Write(b)
		if !stall {
			c.(*net.TCPConn).CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("stream %x... not closed by the node", b[:min(len(b), 16)])
			}
		}
		return time.Since(start)
	}
	bomb := append([]byte{2}, hugeArray...)
	send(pushPull(t, bomb, len(bomb)), false)
	v.log.waitLog(t, 5*time.Second, "gossip: catalogue push/pull refused")
	nested := append([]byte{2, 0x91, 0x81, 0xa1, 'c'}, hugeArray...)
	send(pushPull(t, nested, len(nested)), false)
	send(randomBytes(4096), false)
	// Claims 20 MB of user state (memberlist's limit), sends 10 bytes, stalls.
	took := send(pushPull(t, []byte{2, 0x90, 0, 0, 0, 0, 0, 0, 0, 0}, 20<<20), true)
	t.Logf("stalled push/pull closed after %s", took.Round(time.Millisecond))
	if took > 5*time.Second { // meshtest sets memberlist's TCPTimeout to 2 s
		t.Errorf("stalled push/pull kept for %s", took)
	}
	v.log.waitLog(t, 5*time.Second, "gossip:", "Failed to read remote state")
	h.end(t, 96<<20, 8<<20)
	v.check(t)
}

// hello is a data-plane handshake frame from a node named name.
func hello(t *testing.T, name string) []byte {
	b, err := wire.AppendFrame(nil, wire.KindHello, &wire.Header{Name: name, Msg: "127.0.0.1:1"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// closedWithin reports how long the node took to close c (reading until
// EOF or a reset), or fails after limit.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	took := time.Since(start)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("connection still open after %s", limit)
	}
	return took
}

// TestHostileDataPort: junk before the handshake is refused at once (or by
// the 5 s handshake timeout, for a stall), each with a logged reason.
func TestHostileDataPort(t *testing.T) {
	v := newVictim(t)
	h := watchHeap()
	hl := hello(t, "intruder-a")
	badVersion := append([]byte(nil), hl...)
	badVersion[4] = wire.Version + 1
	cases := []struct {
		name   string
		b      []byte
		reason string
		limit  time.Duration
	}{
		// Refused at once, unless its first bytes happen to make a
		// plausible length prefix: then by the handshake timeout.
		{"random bytes", randomBytes(2048), "data connection refused", 8 * time.Second},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "data connection refused", time.Second},
		{"oversized length prefix", []byte{0xff, 0xff, 0xff, 0xf0, wire.Version, byte(wire.KindHello)}, "frame too large", time.Second},
		{"max+1 length prefix", []byte{0x01, 0x00, 0x00, 0x01, wire.Version}, "frame too large", time.Second},
		{"wrong protocol version", badVersion, "unsupported protocol version", time.Second},
		{"not a hello", mustFrame(t, wire.KindRequest, &wire.Header{To: 1, Name: "echo"}), "not a hello", time.Second},
		{"hello without a name", mustFrame(t, wire.KindHello, &wire.Header{}), "data connection refused", time.Second},
		{"truncated hello then close", hl[:len(hl)-3], "unexpected EOF", time.Second},
		{"half a frame, then a stall", hl[:6], "i/o timeout", 8 * time.Second},
		{"length prefix only, then a stall", hl[:4], "i/o timeout", 8 * time.Second},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			c, err := net.Dial("tcp", v.n.DataAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			local := c.LocalAddr().String()
			c.Write(tc.b)
			if tc.name == "truncated hello then close" {
				c.(*net.TCPConn).CloseWrite()
			}
			took := closedWithin(t, c, tc.limit)
			line := v.log.waitLog(t, 2*time.Second, "data connection refused", local)
			if !strings.Contains(line, tc.reason) {
				t.Errorf("logged %q, want the reason %q", line, tc.reason)
			}
			t.Logf("closed after %s: %s", took.Round(time.Millisecond), line[strings.Index(line, "msg="):])
		})
	}
	h.end(t, 32<<20, 4<<20)
	v.check(t)
}

func mustFrame(t *testing.T, k wire.Kind, h *wire.Header) []byte {
	b, err := wire.AppendFrame(nil, k, h, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostileStallAfterHandshake: a client that completes the handshake
// under a made-up node name (not a member) and then sends half a frame and
// stalls is cut off, and leaves nothing behind.
func TestHostileStallAfterHandshake(t *testing.T) {
	v := newVictim(t)
	before := mesh.PeerEntries(v.n)
	var conns []net.Conn
	for i := range 20 {
		c, err := net.Dial("tcp", v.n.DataAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hello(t, fmt.Sprintf("intruder-%d", i)))
		r := wire.NewReader(c, 0)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := r.Next()
		if err != nil || f.Kind != wire.KindHelloAck {
			t.Fatalf("handshake: %v %v", f.Kind, err)
		}
		c.SetReadDeadline(time.Time{})
		c.Write([]byte{0, 0, 1, 0, wire.Version, byte(wire.KindEvent)}) // a 256-byte frame, 2 bytes of it
		conns = append(conns, c)
	}
	for _, c := range conns {
		if closedWithin(t, c, 20*time.Second); t.Failed() {
			break
		}
	}
	line := v.log.waitLog(t, 2*time.Second, "not a member", "intruder-")
	t.Logf("logged: %s", line)
	meshtest.Eventually(t, 2*time.Second, func() error {
		if got := mesh.PeerEntries(v.n); got > before {
			return fmt.Errorf("node keeps %d peer entries, %d before the intruders", got, before)
		}
		return nil
	})
	v.check(t)
}

// TestHostileBadFrameAfterHandshake: a peer that completed the handshake
// and then sends a frame that cannot be read is cut off, and the reason is
// logged at warning level (a port scan's refused handshakes are only Info).
func TestHostileBadFrameAfterHandshake(t *testing.T) {
	v := newVictim(t)
	c, err := net.Dial("tcp", v.n.DataAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(hello(t, "intruder-bad-frame"))
	r := wire.NewReader(c, 0)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if f, err := r.Next(); err != nil || f.Kind != wire.KindHelloAck {
		t.Fatalf("handshake: %v %v", f.Kind, err)
	}
	c.SetReadDeadline(time.Time{})
	c.Write([]byte{0xff, 0xff, 0xff, 0xf0, wire.Version, byte(wire.KindEvent)})
	closedWithin(t, c, 5*time.Second)
	line := v.log.waitLog(t, 2*time.Second, "bad frame", "frame too large")
	if !strings.Contains(line, "level=WARN") {
		t.Errorf("logged %q, want a warning", line)
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if v.ok.Load() == 0 {
			return errors.New("the healthy requester has no answer yet")
		}
		return nil
	})
	v.check(t)
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestHostileConnectionFlood: many connections at once that send nothing.
// The node must not spend a file descriptor on each (with the default
// limit, a few thousand would leave it unable to accept or dial anything),
// and must close them all.
func TestHostileConnectionFlood(t *testing.T) {
	v := newVictim(t)
	const flood = 1500
	h := watchHeap()
	base := openFDs(t)
	conns, dialErrs := floodDial(t, v.n.DataAddr(), flood, 50)
	mine := flood - dialErrs
	var nodeFDs int
	time.Sleep(500 * time.Millisecond) // let the node accept what it will
	nodeFDs = openFDs(t) - base - mine
	t.Logf("%d connections open at once (%d dials failed): the node holds %d descriptors for them", mine, dialErrs, nodeFDs)
	if nodeFDs > 300 {
		t.Errorf("node holds %d descriptors for %d idle connections: unbounded", nodeFDs, mine)
	}
	// Every connection is closed by the node (at once or after the
	// handshake timeout), and the descriptors come back.
	closed := 0
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range conns {
		if c == nil {
			continue
		}
		c.SetReadDeadline(deadline)
		if _, err := io.Copy(io.Discard, c); !errors.Is(err, os.ErrDeadlineExceeded) {
			closed++
		}
	}
	if closed != mine {
		t.Errorf("node closed %d of %d idle connections", closed, mine)
	}
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	meshtest.Eventually(t, 5*time.Second, func() error {
		if n := openFDs(t); n > base+10 {
			return fmt.Errorf("%d descriptors open, %d before the flood", n, base)
		}
		return nil
	})
	t.Logf("logged: %s", v.log.waitLog(t, 2*time.Second, "too many connections"))
	h.end(t, 64<<20, 8<<20)
	v.check(t)
}

// Only nodes that announce a usable address and warren's metadata become
// members: junk that parses as a memberlist "alive" message does not.
func TestOnlyWarrenNodesAreAdmitted(t *testing.T) {
	n := meshtest.Node(t)
	for _, tc := range []struct {
		name string
		m    memberlist.Node
		ok   bool
	}{
		{"warren peer", memberlist.Node{Name: "p", Addr: net.IPv4(127, 0, 0, 2), Port: 7946, Meta: []byte("1|127.0.0.2:9000")}, true},
		{"peer before its data address is known", memberlist.Node{Name: "p", Addr: net.IPv4(127, 0, 0, 2), Port: 7946, Meta: []byte("1|")}, true},
		{"no address", memberlist.Node{Name: "p", Port: 7946, Meta: []byte("1|127.0.0.2:9000")}, false},
		{"unspecified address", memberlist.Node{Name: "p", Addr: net.IPv4zero, Port: 7946, Meta: []byte("1|")}, false},
		{"port 0", memberlist.Node{Name: "p", Addr: net.IPv4(127, 0, 0, 2), Meta: []byte("1|")}, false},
		{"multicast", memberlist.Node{Name: "p", Addr: net.IPv4(224, 0, 0, 251), Port: 5353, Meta: []byte("1|")}, false},
		{"no metadata", memberlist.Node{Name: "p", Addr: net.IPv4(127, 0, 0, 2), Port: 7946}, false},
		{"bad data address", memberlist.Node{Name: "p", Addr: net.IPv4(127, 0, 0, 2), Port: 7946, Meta: []byte("1|nowhere")}, false},
	} {
		if err := mesh.Admit(n, &tc.m); (err == nil) != tc.ok {
			t.Errorf("%s: admit = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// TestHostileGossipStreamFlood: connections by the thousand to the gossip
// port, each sending nothing. memberlist serves every stream in a goroutine
// until its TCP timeout, so unbounded they would exhaust the node's file
// descriptors; the node serves a bounded number and closes the rest at
// once, and a new node can still join through it meanwhile.
func TestHostileGossipStreamFlood(t *testing.T) {
	v := newVictim(t)
	const flood = 1000
	base := openFDs(t)
	_, dialErrs := floodDial(t, v.n.Addr(), flood, 20)
	mine := flood - dialErrs
	time.Sleep(300 * time.Millisecond) // let the node accept what it will
	nodeFDs := openFDs(t) - base - mine
	t.Logf("%d gossip connections open at once (%d dials failed): the node holds %d descriptors for them", mine, dialErrs, nodeFDs)
	if nodeFDs > mesh.MaxGossipStreams+100 {
		t.Errorf("node holds %d descriptors for %d idle gossip connections: unbounded", nodeFDs, mine)
	}
	// A new node joins through the flooded one while the flood lasts.
	newcomer := meshtest.Node(t, mesh.WithSeeds(v.n.Addr()))
	meshtest.WaitMembers(t, []*mesh.Node{v.n, v.peer, newcomer}, 3)
	newcomer.Close(context.Background())
	meshtest.WaitMembers(t, []*mesh.Node{v.n, v.peer}, 2)
	v.log.waitLog(t, 5*time.Second, "gossip listener: too many streams")
	v.check(t)
}

// floodDial opens n TCP connections to addr from workers goroutines and
// returns them (nil where a dial failed, counted in failed); they are
// closed at cleanup.
func floodDial(t *testing.T, addr string, n, workers int) (conns []net.Conn, failed int) {
	conns = make([]net.Conn, n)
	var wg sync.WaitGroup
	var dialErrs atomic.Int64
	for g := range workers {
		wg.Go(func() {
			for i := g; i < n; i += workers {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					dialErrs.Add(1)
					continue
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	return conns, int(dialErrs.Load())
}
