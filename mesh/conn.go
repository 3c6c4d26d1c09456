package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/wire"
)

const (
	dialTimeout      = 3 * time.Second
	handshakeTimeout = 5 * time.Second
	tieBreakWait     = time.Second
	maxRedialBackoff = 5 * time.Second
	goAwayTimeout    = 2 * time.Second
	// maxHandshakes bounds the inbound connections in their handshake or
	// from a node that is not (yet) a member: each holds a descriptor and
	// a 64 KiB buffer, so a client opening connections by the thousand
	// must not exhaust either. Beyond it, new connections are closed at
	// once (a peer dialing then retries with backoff).
	maxHandshakes = 128
	// strangerGrace is how long an inbound connection from a node that is
	// not a member may stay open; gossip makes a real peer a member well
	// within it.
	strangerGrace = 10 * time.Second
)

var errRejected = errors.New("mesh: connection rejected by peer (duplicate)")

// conn is the one data connection to a peer, shared by every component.
type conn struct {
	peer      string
	nc        net.Conn // nil for the loopback connection
	closer    io.Closer
	r         *wire.Reader
	w         *wire.Writer
	goingAway atomic.Bool // the peer or we said goodbye: no new sends
	closed    atomic.Bool
	pings     atomic.Uint64 // sequence of the last ping sent
	pong      atomic.Uint64 // sequence of the last pong received
	probing   atomic.Bool   // probeExisting is checking it
	ackCh     chan struct{}
	ackOnce   sync.Once
	closeOnce sync.Once

	// Lending the read loop to a handler (wire.Frame.Lend) and borrowing
	// the reading by callers (Port.Await), see lend.go. lent says what the
	// read loop did with the current frame, since lentAt; borrow says who
	// reads, and freeAt since when a free connection waits for a borrower;
	// wantBorrow is set by a caller that found the read loop reading;
	// resume wakes the read loop parked while callers read. The guard
	// timer guardT, armed while guardOn, ends lends and free periods that
	// last; guardEvery is when it looks next, in nanoseconds (see
	// lendCheck). bf is the borrowers' frame. kicked says kickMu's holder
	// set a read deadline to stop a borrower (Reading.Interrupt).
	lent       atomic.Uint32 // lendNone, lendOut or lendTaken
	lentAt     atomic.Int64  // monoNow
	borrow     atomic.Uint32 // readLoop, readFree or readBorrowed
	freeAt     atomic.Int64  // monoNow
	wantBorrow atomic.Bool
	resume     chan struct{}
	guardT     *time.Timer
	guardOn    atomic.Bool
	guardEvery atomic.Int64
	bf         wire.Frame
	kickMu     sync.Mutex
	kicked     bool
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.w.Close()
		c.closer.Close()
	})
}

// liveConn returns the open data connection to node id, or nil.
func (n *Node) liveConn(id string) *conn {
	p := n.peerNow(id)
	if p == nil {
		return nil
	}
	if c := p.conn.Load(); c != nil && c.nc != nil && !c.closed.Load() && !c.goingAway.Load() {
		return c
	}
	return nil
}

// peerNow returns the peer with id, or nil.
func (n *Node) peerNow(id string) *peer { return n.peerSnap.get(id) }

// peersChangedLocked publishes n.peers for peerNow. n.peerMu is held.
func (n *Node) peersChangedLocked() { n.peerSnap.publish(n.peers) }

// peer tracks the connection state for one remote node.
type peer struct {
	id   string
	conn atomic.Pointer[conn]
	// The fields below are guarded by Node.peerMu.
	addr      string
	member    bool
	dialing   bool
	ready     chan struct{} // closed when a dial attempt settles
	failures  int
	nextDial  time.Time
	redialing bool
}

func (p *peer) wake() {
	if p.ready != nil {
		close(p.ready)
		p.ready = nil
	}
}

// peerUp records a live member and its data address.
func (n *Node) peerUp(id, addr string) {
	n.peerMu.Lock()
	defer n.peerMu.Unlock()
	p := n.peers[id]
	if p == nil {
		p = &peer{id: id}
		n.peers[id] = p
		n.peersChangedLocked()
	}
	p.member = true
	if addr != "" {
		p.addr = addr
	}
}

// peerGone forgets a departed member and drops its connection; components
// learn of it through PeerDown.
func (n *Node) peerGone(id string) {
	n.peerMu.Lock()
	p := n.peers[id]
	delete(n.peers, id)
	n.peersChangedLocked()
	var c *conn
	if p != nil {
		p.member = false
		c = p.conn.Swap(nil)
		p.wake()
	}
	n.peerMu.Unlock()
	if c != nil {
		c.close()
	}
	n.notifyPeerDown(id)
}

// connTo returns the connection to a node, dialing it when needed.
func (n *Node) connTo(ctx context.Context, id string) (*conn, error) {
	if id == n.id {
		return n.self, nil
	}
	p := n.peerNow(id)
	if p == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownPeer, id)
	}
	if c := p.conn.Load(); c != nil {
		return c, nil
	}
	return n.connect(ctx, p, false)
}

// connOf returns the connection to node whose Writer is w, if it is still
// the current one (or the loopback connection's).
func (n *Node) connOf(node string, w *wire.Writer) *conn {
	if n.self != nil && n.self.w == w {
		return n.self
	}
	if p := n.peerNow(node); p != nil {
		if c := p.conn.Load(); c != nil && c.w == w {
			return c
		}
	}
	return nil
}

// connNow returns the current connection to a node without waiting.
func (n *Node) connNow(id string) (*conn, error) {
	if id == n.id {
		return n.self, nil
	}
	p := n.peerNow(id)
	if p == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownPeer, id)
	}
	if c := p.conn.Load(); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnreachable, id)
}

// connect dials p, or waits for a dial in progress. Unless force is set it
// fails fast while the peer is in dial backoff.
func (n *Node) connect(ctx context.Context, p *peer, force bool) (*conn, error) {
	for attempt := 0; ; attempt++ {
		n.peerMu.Lock()
		if c := p.conn.Load(); c != nil {
			n.peerMu.Unlock()
			return c, nil
		}
		switch {
		case n.closing.Load():
			n.peerMu.Unlock()
			return nil, ErrClosed
		case n.peers[p.id] != p:
			n.peerMu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrUnknownPeer, p.id)
		case !p.dialing && (attempt > 0 || (!force && time.Now().Before(p.nextDial)) || p.addr == ""):
			n.peerMu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrUnreachable, p.id)
		case !p.dialing:
			p.dialing = true
			p.ready = make(chan struct{})
			n.wg.Add(1)
			go n.dial(p, p.addr, p.ready)
		}
		ready := p.ready
		n.peerMu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-n.done:
			return nil, ErrClosed
		}
	}
}

func (n *Node) dial(p *peer, addr string, ready chan struct{}) {
	defer n.wg.Done()
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(n.ctx, "tcp", addr)
	var c *conn
	if err == nil {
		c, err = n.handshakeOut(nc, p.id)
		if err != nil {
			nc.Close()
		}
	}
	if errors.Is(err, errRejected) {
		// The peer is dialing us too and its connection wins the tie; wait
		// for it to arrive before giving up the attempt.
		t := time.NewTimer(tieBreakWait)
		select {
		case <-ready:
		case <-t.C:
		case <-n.ctx.Done():
		}
		t.Stop()
	}
	n.peerMu.Lock()
	if c != nil && p.conn.Load() == nil && n.peers[p.id] == p && !n.closing.Load() {
		n.installLocked(p, c)
		n.peerMu.Unlock()
		n.startConn(c)
		return
	}
	p.dialing = false
	failed := err != nil && !errors.Is(err, errRejected) && p.conn.Load() == nil
	if failed {
		p.failures++
		p.nextDial = time.Now().Add(min(time.Duration(1<<min(p.failures, 10))*50*time.Millisecond, maxRedialBackoff))
	}
	p.wake()
	redial := failed && p.member && !p.redialing && n.peers[p.id] == p && !n.closing.Load()
	if redial {
		p.redialing = true
		n.wg.Add(1)
		go n.redial(p)
	}
	n.peerMu.Unlock()
	if c != nil {
		c.close() // lost a race with a connection that arrived meanwhile
	}
	if failed {
		n.log.Debug("dial failed", "peer", p.id, "addr", addr, "err", err)
		n.setReachable(p.id, false)
	}
}

// installLocked makes c the connection to p. n.peerMu must be held.
func (n *Node) installLocked(p *peer, c *conn) {
	p.conn.Store(c)
	p.dialing = false
	p.failures = 0
	p.nextDial = time.Time{}
	p.wake()
}

func (n *Node) startConn(c *conn) {
	n.setReachable(c.peer, true)
	n.wg.Add(1)
	go n.readLoop(c)
}

// redial reconnects to a member whose connection failed, with backoff, for
// as long as it stays a member. A peer is never left "known but unreachable".
func (n *Node) redial(p *peer) {
	defer n.wg.Done()
	for {
		n.peerMu.Lock()
		wait := time.Until(p.nextDial)
		done := !p.member || p.conn.Load() != nil || n.peers[p.id] != p
		if done {
			p.redialing = false
		}
		n.peerMu.Unlock()
		if done {
			return
		}
		t := time.NewTimer(max(wait, 10*time.Millisecond))
		select {
		case <-n.ctx.Done():
			t.Stop()
			n.peerMu.Lock()
			p.redialing = false
			n.peerMu.Unlock()
			return
		case <-t.C:
		}
		if _, err := n.connect(n.ctx, p, true); err == nil {
			n.peerMu.Lock()
			p.redialing = false
			n.peerMu.Unlock()
			return
		}
	}
}

func (n *Node) newConn(peerID string, nc net.Conn, r *wire.Reader) *conn {
	c := &conn{
		peer:   peerID,
		nc:     nc,
		closer: nc,
		r:      r,
		w:      wire.NewWriter(nc, n.cfg.maxFrame),
		ackCh:  make(chan struct{}),
	}
	n.initLend(c)
	return c
}

func (n *Node) handshakeOut(nc net.Conn, peerID string) (*conn, error) {
	// Read deadlines only: the connection's wire.Writer keeps the write
	// deadline, and would not know that something else cleared it.
	nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	defer nc.SetReadDeadline(time.Time{})
	r := wire.NewReader(nc, n.cfg.maxFrame)
	c := n.newConn(peerID, nc, r)
	hello := wire.Header{Name: n.id, Msg: n.dataAddr}
	if err := c.w.WriteFrame(n.ctx, wire.KindHello, &hello, nil); err != nil {
		return nil, fmt.Errorf("mesh: hello to %s: %w", peerID, err)
	}
	f, err := r.Next()
	if err != nil {
		return nil, fmt.Errorf("mesh: handshake with %s: %w", peerID, err)
	}
	switch {
	case f.Kind != wire.KindHelloAck:
		return nil, fmt.Errorf("mesh: handshake with %s: got %s, want hello-ack", peerID, f.Kind)
	case f.Header.Status == wire.StatusRejected:
		return nil, errRejected
	case f.Header.Name != peerID:
		// The address now belongs to another node (a restart reused it).
		return nil, fmt.Errorf("mesh: dialed %s but reached %s", peerID, f.Header.Name)
	}
	return c, nil
}

func (n *Node) acceptLoop() {
	defer n.wg.Done()
	var delay time.Duration
	slots := make(chan struct{}, maxHandshakes)
	var refused int
	var lastWarn time.Time
	for {
		nc, err := n.ln.Accept()
		if err != nil {
			if n.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			n.log.Warn("data listener: accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-n.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		select {
		case slots <- struct{}{}:
		default:
			nc.Close()
			refused++
			if time.Since(lastWarn) >= time.Second {
				n.log.Warn("data listener: too many connections in handshake or from non-members; refusing new ones",
					"limit", maxHandshakes, "refused", refused)
				lastWarn, refused = time.Now(), 0
			}
			continue
		}
		n.wg.Add(1)
		go n.handshakeIn(nc, func() { <-slots })
	}
}

// handshakeIn answers an inbound connection's hello. It calls release
// once the connection no longer needs its handshake slot: when it is
// refused, or installed for a member, or (from a non-member) when that node
// becomes a member or the connection closes.
func (n *Node) handshakeIn(nc net.Conn, release func()) {
	defer n.wg.Done()
	held := true
	defer func() {
		if held {
			release()
		}
	}()
	nc.SetReadDeadline(time.Now().Add(handshakeTimeout)) // the Writer keeps the write deadline (handshakeOut)
	r := wire.NewReader(nc, n.cfg.maxFrame)
	f, err := r.Next()
	switch {
	case err != nil:
	case f.Kind != wire.KindHello:
		err = fmt.Errorf("first frame is %s, not a hello", f.Kind)
	case f.Header.Name == "":
		err = errors.New("hello without a node name")
	case f.Header.Name == n.id:
		err = errors.New("hello from a node with this node's own ID")
	}
	if err != nil {
		n.log.Info("data connection refused", "remote", nc.RemoteAddr().String(), "reason", err)
		nc.Close()
		return
	}
	id, addr := f.Header.Name, f.Header.Msg
	c := n.newConn(id, nc, r)
	ack := wire.Header{Name: n.id}
	n.peerMu.Lock()
	if n.closing.Load() {
		n.peerMu.Unlock()
		nc.Close()
		return
	}
	p := n.peers[id]
	if p == nil {
		p = &peer{id: id, addr: addr}
		n.peers[id] = p
		n.peersChangedLocked()
	}
	// Exactly one connection per pair: an existing one wins; when both sides
	// dial at once, the dial from the smaller ID wins.
	existing := p.conn.Load()
	reject := existing != nil || (p.dialing && n.id < id)
	if reject {
		ack.Status = wire.StatusRejected
	}
	// The ack is written under the lock so that it is the first frame on the
	// connection, before any component can use it.
	err = c.w.WriteFrame(n.ctx, wire.KindHelloAck, &ack, nil)
	if reject || err != nil {
		n.peerMu.Unlock()
		c.close()
		if existing != nil {
			n.probeExisting(existing)
		}
		return
	}
	n.installLocked(p, c)
	stranger := !p.member
	n.peerMu.Unlock()
	nc.SetReadDeadline(time.Time{})
	n.startConn(c)
	if stranger {
		held = false
		n.wg.Add(1)
		go n.watchStranger(p, c, release)
	}
}

// staleProbeWait is how long an existing connection has to answer a ping
// when its peer dials again.
const staleProbeWait = 500 * time.Millisecond

// probeExisting checks c, the connection kept when its peer dialed again.
// A peer dials only when it has no connection, so c may be one it closed
// without our noticing (its FIN lost in a partition: TCP would tell us only
// at its next retransmission, seconds later), and it would make every new
// dial of the peer's fail. If c does not answer a ping, it is closed, so
// the peer's next dial succeeds. When both sides dialed at once, c is
// fresh and answers.
func (n *Node) probeExisting(c *conn) {
	if !c.probing.CompareAndSwap(false, true) {
		return // one probe at a time
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer c.probing.Store(false)
		if !n.pingConn(c, staleProbeWait) && !c.closed.Load() && n.ctx.Err() == nil {
			n.log.Info("closing a data connection that no longer answers: its peer dialed again", "peer", c.peer)
			c.close()
		}
	}()
}

// watchStranger closes c, from a node that is not a member, unless that
// node becomes a member within strangerGrace, and then releases c's
// handshake slot (at once if c closes earlier).
func (n *Node) watchStranger(p *peer, c *conn, release func()) {
	defer n.wg.Done()
	defer release()
	deadline := time.Now().Add(strangerGrace)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		n.peerMu.Lock()
		member, current := p.member, p.conn.Load() == c
		n.peerMu.Unlock()
		if member || !current {
			return
		}
		if time.Now().After(deadline) {
			n.log.Info("data connection closed: the peer is not a member of the mesh", "peer", c.peer,
				"remote", c.nc.RemoteAddr().String(), "after", strangerGrace)
			c.close()
			return
		}
	}
}

// readLoop reads c's frames and dispatches them until c fails or closes.
// A handler may borrow it (wire.Frame.Lend); if it keeps it too long, a new
// readLoop goroutine takes over the reading and this one ends once the
// handler returns. It may also give the reading to callers (Port.Await)
// and park until they give it back (see lend.go).
//
// A read loop is counted in n.wg until it ends, or until another takes
// over from it, which inherits its count: Close waits for the reading of
// every connection to stop, not for a handler (the component's own Close
// deals with those).
func (n *Node) readLoop(c *conn) {
	var f wire.Frame // one per read loop: handlers must not keep it
	lent := false    // this goroutine lent itself for the current frame
	lend := func() bool {
		lent = n.lend(c)
		return lent
	}
	for {
		if err := c.r.ReadFrame(&f); err != nil {
			if c.unkick(err) {
				continue
			}
			switch {
			case errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrFrameTooLarge) || errors.Is(err, wire.ErrVersion):
				// Bad input from the peer: worth an operator's attention.
				n.log.Warn("closing data connection: bad frame", "peer", c.peer, "reason", err)
			case !c.goingAway.Load() && !n.closing.Load() && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
				n.log.Info("data connection closed", "peer", c.peer, "reason", err)
			}
			n.connClosed(c)
			n.wg.Done()
			return
		}
		f.Back, f.Lend = c.w, lend
		ok := n.dispatch(c, &f)
		if lent {
			lent = false
			if !c.endLend() {
				return // another goroutine reads c now, counted in n.wg instead
			}
		} else if c.wantBorrow.Load() && ok && c.nc != nil && c.r.Buffered() == 0 {
			n.park(c) // until callers reading c themselves give it back
		}
		if !ok {
			n.connClosed(c)
			n.wg.Done()
			return
		}
	}
}

// dispatch routes one frame; it returns false to close the connection.
func (n *Node) dispatch(c *conn, f *wire.Frame) bool {
	switch f.Kind {
	case wire.KindRequest, wire.KindResponse, wire.KindCancel, wire.KindEvent, wire.KindCredit:
		p := n.port(f.Header.To)
		if p == nil {
			if f.Kind == wire.KindRequest {
				// Not processed, so the requester may safely send it elsewhere.
				h := wire.Header{To: f.Header.From, Seq: f.Header.Seq, Status: wire.StatusRejected, Msg: "no such responder"}
				c.w.Post(wire.KindResponse, &h, nil)
			}
			return true
		}
		p.h.HandleFrame(c.peer, f)
	case wire.KindGoAway:
		c.goingAway.Store(true)
		n.markLeaving(c.peer)
		n.detach(c)
		c.w.Post(wire.KindGoAwayAck, &wire.Header{}, nil)
	case wire.KindGoAwayAck:
		c.ackOnce.Do(func() { close(c.ackCh) })
	case wire.KindPing:
		if !n.ignorePings.Load() {
			c.w.Post(wire.KindPong, &wire.Header{Seq: f.Header.Seq}, nil)
		}
	case wire.KindPong:
		if seq := f.Header.Seq; seq > c.pong.Load() {
			c.pong.Store(seq) // only this read loop stores it
		}
	default:
		n.log.Warn("closing data connection: unexpected frame", "peer", c.peer, "kind", f.Kind.String())
		return false
	}
	return true
}

// detach stops new sends on c (they will dial afresh).
func (n *Node) detach(c *conn) {
	n.peerMu.Lock()
	if p := n.peers[c.peer]; p != nil {
		p.conn.CompareAndSwap(c, nil)
	}
	n.peerMu.Unlock()
}

func (n *Node) connClosed(c *conn) {
	c.close()
	c.guardT.Stop() // its read loop ends: no lend or borrow is left to watch
	if c == n.self {
		return
	}
	n.peerMu.Lock()
	p := n.peers[c.peer]
	wasCurrent := p != nil && p.conn.CompareAndSwap(c, nil)
	if wasCurrent && !p.member && !p.dialing && !p.redialing {
		// A node that connected without being a member leaves nothing
		// behind (nor an address anyone would dial).
		delete(n.peers, c.peer)
		n.peersChangedLocked()
	}
	redial := wasCurrent && p.member && !c.goingAway.Load() && !p.redialing && !n.closing.Load()
	if redial {
		p.redialing = true
		p.nextDial = time.Time{}
		n.wg.Add(1)
		go n.redial(p)
	}
	n.peerMu.Unlock()
	if redial {
		n.setReachable(c.peer, false)
	}
	n.notifyPeerDown(c.peer)
}

// goAwayAll says goodbye on every connection and waits (bounded) for the
// acknowledgements: after one, the peer has nothing more in flight to us.
func (n *Node) goAwayAll(ctx context.Context) {
	n.peerMu.Lock()
	var cs []*conn
	for _, p := range n.peers {
		if c := p.conn.Swap(nil); c != nil {
			c.goingAway.Store(true)
			cs = append(cs, c)
		}
		p.wake()
	}
	n.peerMu.Unlock()
	if len(cs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, goAwayTimeout)
	defer cancel()
	for _, c := range cs {
		c.w.WriteFrame(ctx, wire.KindGoAway, &wire.Header{}, nil)
	}
	for _, c := range cs {
		select {
		case <-c.ackCh:
		case <-ctx.Done():
			return
		}
	}
	for _, c := range cs {
		c.w.Flush(ctx)
		c.close()
	}
}

func (n *Node) closeAllConns() {
	n.peerMu.Lock()
	var cs []*conn
	for _, p := range n.peers {
		if c := p.conn.Swap(nil); c != nil {
			cs = append(cs, c)
		}
		p.wake()
	}
	n.peerMu.Unlock()
	for _, c := range cs {
		c.close()
	}
	n.self.close()
}

// startSelf sets up the loopback connection used between components of this
// process, so local and remote traffic take the same path.
func (n *Node) startSelf() {
	pipe := newMemPipe()
	n.self = &conn{
		peer:   n.id,
		closer: pipe,
		r:      wire.NewReader(pipe, n.cfg.maxFrame),
		w:      wire.NewWriter(pipe, n.cfg.maxFrame),
		ackCh:  make(chan struct{}),
	}
	n.initLend(n.self)
	n.wg.Add(1)
	go n.readLoop(n.self)
}

// memPipe is an in-memory byte stream whose writes never block, so a
// component may write to its own node from any goroutine, including the
// read loop.
type memPipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte
	off    int
	closed bool
}

func newMemPipe() *memPipe {
	p := &memPipe{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *memPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, net.ErrClosed
	}
	p.buf = append(p.buf, b...)
	p.cond.Signal()
	return len(b), nil
}

func (p *memPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.off == len(p.buf) && !p.closed {
		p.cond.Wait()
	}
	if p.off == len(p.buf) {
		return 0, io.EOF
	}
	k := copy(b, p.buf[p.off:])
	p.off += k
	if p.off == len(p.buf) {
		p.buf, p.off = p.buf[:0], 0
	}
	return k, nil
}

func (p *memPipe) Close() error {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	return nil
}
