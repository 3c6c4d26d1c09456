package mesh

import (
	"errors"
	"os"
	"sync/atomic"
	"time"
)

// A connection's frames are read by its read loop (readLoop), one frame at
// a time, and each is handed to its component's handler on that goroutine.
// Two ways of sharing that goroutine's work save the hand-offs between
// goroutines that a request and its reply otherwise cost at each end (a
// wake-up of another goroutine, often of another thread on another core),
// which dominate a round trip when requests go one at a time:
//
//   - Lending: a handler may run work on the read loop (wire.Frame.Lend,
//     which the responder uses when it has nothing else to do). Should the
//     work last, a new read loop is started and the lending one ends when
//     its handler returns: frames never wait long for a handler.
//   - Borrowing: a caller that waits for a reply may read the connection
//     itself (Port.Await), dispatching every frame as the read loop would,
//     until its own has come. The read loop gives the reading away when a
//     caller has asked for it (after a frame, with nothing more buffered)
//     and parks; it gets the reading back when no caller has taken it for
//     a while, at once from a borrower that meets an error, and on demand
//     (Port.Resume). Reading.Interrupt stops a borrower early (its
//     caller's context ended), through a read deadline.
//
// "A while" is kept by one guard timer per connection, armed while a lend
// or a free period lasts, not for each: arming a timer wakes the
// scheduler's network poller, which costs about what the hand-off saved.
// The guard takes the reading back from a lend or a free period lendAge
// old or more. It looks lendCheck after it was armed, and then, for as
// long as it finds nothing to take back (handlers quick, each caller
// followed by the next, or no traffic at all when it looks), twice as long
// after each look, up to lendCheckMax; taking the reading back brings it
// down to lendCheck again. So a frame waits at most about
// lendAge+lendCheck for a slow handler or for a caller that went away, or
// up to about lendAge+lendCheckMax the first time after the guard has
// found nothing to take back for a while. The looks are not free: a timer
// firing wakes another thread, and the round trips around it pay far more
// for that than the look itself costs (row 1a of go run ./bench, one
// request at a time, on a 2-core machine: 15 % fewer requests a second
// with a look every millisecond than with one every 32 ms, 8 % with one
// every 8 ms; the same 1 ms timer cost the raw TCP ping-pong 22 %).
const (
	lendAge      = 50 * time.Microsecond
	lendCheck    = time.Millisecond
	lendCheckMax = 32 * time.Millisecond
)

// epoch is the origin of monoNow.
var epoch = time.Now()

// monoNow is a monotonic clock reading, in nanoseconds.
func monoNow() int64 { return int64(time.Since(epoch)) }

// initLend prepares c for lends and borrows, before anything else sees c.
func (n *Node) initLend(c *conn) {
	c.resume = make(chan struct{}, 1)
	c.guardEvery.Store(int64(lendCheck))
	c.guardT = time.AfterFunc(time.Hour, func() { n.guard(c) })
	c.guardT.Stop()
}

// watch arms c's guard unless it is armed.
func (c *conn) watch() {
	if !c.guardOn.Load() && !c.guardOn.Swap(true) {
		c.guardT.Reset(time.Duration(c.guardEvery.Load()))
	}
}

// guard is the function of c's guard timer: it takes the reading back from
// a handler or from callers that have had it for lendAge, sets when it
// looks next (see lendCheck), and re-arms itself while a lend or a borrow
// lasts.
func (n *Node) guard(c *conn) {
	now := monoNow()
	took := false
	if c.lent.Load() == lendOut && now-c.lentAt.Load() >= int64(lendAge) {
		took = n.takeOver(c)
	}
	if c.borrow.Load() == readFree && now-c.freeAt.Load() >= int64(lendAge) {
		took = c.unpark() || took
	}
	if every := c.guardEvery.Load(); took {
		c.guardEvery.Store(int64(lendCheck))
	} else if every < int64(lendCheckMax) {
		c.guardEvery.Store(min(2*every, int64(lendCheckMax)))
	}
	// Disarmed before looking again, so that a lend or a free period that
	// begins meanwhile arms it itself.
	c.guardOn.Store(false)
	if c.lent.Load() == lendOut || c.borrow.Load() != readLoop {
		c.watch()
	}
}

// States of conn.lent.
const (
	lendNone  = iota // the read loop reads
	lendOut          // the read loop runs a handler
	lendTaken        // the guard started a new read loop; the old one leaves after its handler
)

// lend is the connection's wire.Frame.Lend; it runs on the read loop.
func (n *Node) lend(c *conn) bool {
	if c.r.Buffered() > 0 {
		return false
	}
	c.lentAt.Store(monoNow()) // before lendOut, for the guard
	if !c.lent.CompareAndSwap(lendNone, lendOut) {
		return false
	}
	c.watch()
	return true
}

// takeOver starts a new read loop when a handler has kept the current one
// too long, and reports whether it did.
func (n *Node) takeOver(c *conn) bool {
	if c.lent.CompareAndSwap(lendOut, lendTaken) {
		go n.readLoop(c) // counted in n.wg in the lending one's stead
		return true
	}
	return false
}

// endLend runs on a read loop whose handler has returned after a lend: it
// reports whether that goroutine still reads the connection.
func (c *conn) endLend() bool {
	if c.lent.CompareAndSwap(lendOut, lendNone) {
		return true
	}
	// Taken over: the new read loop may lend from now on.
	c.lent.Store(lendNone)
	return false
}

// States of conn.borrow.
const (
	readLoop     = iota // the read loop reads
	readFree            // the read loop is parked; the next borrower reads
	readBorrowed        // a caller reads, in Port.Await
)

// park gives c's reading to callers (Port.Await) and waits until it comes
// back. It runs on the read loop, between two frames.
func (n *Node) park(c *conn) {
	c.wantBorrow.Store(false)
	c.free()
	<-c.resume
}

// free leaves c's reading to the next borrower, under the guard.
func (c *conn) free() {
	c.freeAt.Store(monoNow()) // before readFree, for the guard
	c.borrow.Store(readFree)
	c.watch()
}

// unpark gives the reading back to the parked read loop if no caller
// reads, and reports whether it did.
func (c *conn) unpark() bool {
	if c.borrow.CompareAndSwap(readFree, readLoop) {
		c.resume <- struct{}{}
		return true
	}
	return false
}

// company notes a frame sent on c with others on their way (Send, not
// SendNow): the answers to them will be read best by the read loop, so a
// request to give the reading away is dropped, and a free connection goes
// back to its read loop. Without it, a caller's request to borrow, made
// while it was alone, would park the read loop after its reply while the
// replies to the requests sent since wait for the guard.
func (c *conn) company() {
	if c.wantBorrow.Load() {
		c.wantBorrow.Store(false)
	}
	if c.borrow.Load() == readFree {
		c.unpark()
	}
}

// giveBack ends a borrow on an error: the read loop reads again at once
// (and meets the error itself, cleaning up as it does).
func (c *conn) giveBack() {
	c.borrow.Store(readLoop)
	c.resume <- struct{}{}
}

// Reading is a caller's hold on the reading of a connection (Port.Await),
// by which another goroutine may stop it early (Interrupt). Its zero value
// is ready to use; one caller uses it at a time.
type Reading struct{ c atomic.Pointer[conn] }

// Interrupt makes the Await that uses rd, if one runs, stop reading soon
// (it returns false unless its done reports true by then). It may stop
// another caller's Await on the same connection instead, in which case that
// one returns false: its caller waits as it would have without Await.
func (rd *Reading) Interrupt() {
	if c := rd.c.Load(); c != nil {
		c.kick()
	}
}

// kick sets a read deadline in the past if a caller reads c, so that its
// read returns.
func (c *conn) kick() {
	c.kickMu.Lock()
	if c.borrow.Load() == readBorrowed {
		c.kicked = true
		c.nc.SetReadDeadline(time.Unix(1, 0))
	}
	c.kickMu.Unlock()
}

// unkick reports whether err is the deadline a kick set, which it then
// clears: the read may be retried (a failed read consumes nothing, see
// wire.Reader).
func (c *conn) unkick(err error) bool {
	if c.nc == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	c.kickMu.Lock()
	defer c.kickMu.Unlock()
	if !c.kicked {
		return false
	}
	c.kicked = false
	c.nc.SetReadDeadline(time.Time{})
	return true
}

// Await reads the frames of the connection to node on the calling
// goroutine, dispatching each as the connection's read loop would, until
// done reports true, so that a caller waiting for a reply it expects on
// that connection is not woken by another goroutine: it reads the reply
// itself. done is called between frames; it must be cheap and must not
// block. Await returns done's last report: false when it could not read
// (another goroutine reads the connection: it will give the reading away
// after its next frame, for a later Await), when the connection failed, or
// when rd.Interrupt stopped it. The caller then waits as it would have
// without Await. rd may be nil when nothing needs to stop the wait early.
//
// After Await the connection stays free for the next caller for a short
// while (see Resume). Frames read by a caller are not lent to their
// handlers (wire.Frame.Lend is nil). Only connections to other nodes are
// ever borrowed.
func (p *Port) Await(node string, done func() bool, rd *Reading) bool {
	if done() {
		return true
	}
	pe := p.n.peerNow(node)
	if pe == nil {
		return false
	}
	c := pe.conn.Load()
	if c == nil || c.nc == nil {
		return false
	}
	if !c.borrow.CompareAndSwap(readFree, readBorrowed) {
		if c.borrow.Load() == readLoop {
			c.wantBorrow.Store(true)
		}
		return false
	}
	if rd != nil {
		rd.c.Store(c)
		defer rd.c.Store(nil)
	}
	f := &c.bf
	for !done() {
		if err := c.r.ReadFrame(f); err != nil {
			if c.unkick(err) {
				if rd != nil && !done() {
					break // interrupted
				}
				continue
			}
			c.giveBack()
			return done()
		}
		f.Back, f.Lend = c.w, nil
		if !p.n.dispatch(c, f) {
			c.close()
			c.giveBack()
			return done()
		}
	}
	c.free()
	return done()
}

// Resume gives the reading of the connection to node back to its read
// loop at once if callers that borrowed it (Await) left it free: for a
// caller that knows frames it will not read are on their way (replies to
// other requests in flight), which would otherwise wait for the guard.
func (p *Port) Resume(node string) {
	if pe := p.n.peerNow(node); pe != nil {
		if c := pe.conn.Load(); c != nil && c.nc != nil {
			c.unpark()
		}
	}
}
