package subscriber

import (
	"context"
	"sync"

	"github.com/warrenmesh/warren/internal/wire"
	"github.com/warrenmesh/warren/mesh"
)

// Flow control
//
// Each publisher may have at most Buffer events, and about BufferBytes
// bytes (payloads and topics), outstanding at this subscriber: it starts
// with those credits (the Buffer and BufferBytes advertised in the
// catalogue), spends one event credit and the event's size in byte credits
// per event, and waits (or drops) when it lacks either. An event larger
// than the byte window still goes once at most half of it is outstanding
// (see publisher's target.take). The delivery goroutine returns credits
// with credit frames (Seq: events, Deadline: their bytes) once it has
// handled the events: every Buffer/4 events or BufferBytes/4 bytes from a
// publisher, and when the queue runs empty. Memory is therefore bounded per
// publisher, end to end, however slow the handlers are.
//
// When a connection to a publisher's node is lost, the publisher resets its
// window (the events in flight will never be acknowledged), and this side
// forgives the credits of the events it still holds from that publisher, so
// the window stays exact. Arrivals beyond twice the window, in events or in
// bytes (only a misbehaving publisher causes them), are dropped and
// counted.

// event is one buffered event; its payload is batch.buf[off:end].
type event struct {
	topic    string
	pub      *pubState
	off, end int
}

// batch is a run of events with their payloads in one buffer. The read
// loops fill one batch while the delivery goroutine works through the
// other, so steady state neither allocates nor locks per event on the
// delivery side.
type batch struct {
	buf []byte
	evs []event
}

const (
	retainBuf    = 1 << 20 // larger batch buffers are not kept once handled
	retainEvents = 1 << 16
	maxPubs      = 1024 // publisher states kept before idle ones are swept
)

func (b *batch) reset() {
	clear(b.evs)
	b.evs = b.evs[:0]
	b.buf = b.buf[:0]
	if cap(b.buf) > retainBuf {
		b.buf = nil
	}
	if cap(b.evs) > retainEvents {
		b.evs = nil
	}
}

type pubKey struct {
	node string
	id   uint64
}

// pubState is the flow-control state of one publisher.
type pubState struct {
	key pubKey
	// Guarded by queue.qmu.
	queued  int // events received and not yet credited back
	forgive int // credits not to return: their events predate a lost connection
	// The same in bytes.
	queuedBytes, forgiveBytes int64
	// Owned by the delivery goroutine.
	owed      int   // events handled and not yet credited back
	owedBytes int64 // their bytes
	listed    bool  // in the delivery goroutine's owed list
}

type queue struct {
	qmu      sync.Mutex
	in       *batch // being filled by the read loops
	spare    *batch // handled batch, ready for reuse
	pubs     map[pubKey]*pubState
	last     *pubState // the most recent publisher, to skip the map lookup
	sleeping bool      // the delivery goroutine waits for wake
	closing  bool      // Close was called: end once empty
	exited   bool      // the delivery goroutine ended
	wake     chan struct{}
	received uint64
	overflow uint64
}

func (q *queue) init() {
	q.in = &batch{}
	q.pubs = map[pubKey]*pubState{}
	q.wake = make(chan struct{}, 1)
}

// signalLocked wakes the delivery goroutine if it sleeps. q.qmu must be
// held; the caller sends on q.wake after unlocking when it returns true.
func (q *queue) signalLocked() bool {
	w := q.sleeping
	q.sleeping = false
	return w
}

func (q *queue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) close() {
	q.qmu.Lock()
	q.closing = true
	w := q.signalLocked()
	q.qmu.Unlock()
	if w {
		q.kick()
	}
}

// pubLocked returns the state of publisher (node, id), creating it.
func (q *queue) pubLocked(node string, id uint64) *pubState {
	if ps := q.last; ps != nil && ps.key.id == id && ps.key.node == node {
		return ps
	}
	k := pubKey{node, id}
	ps := q.pubs[k]
	if ps == nil {
		if len(q.pubs) >= maxPubs {
			q.sweepLocked("")
		}
		ps = &pubState{key: k}
		q.pubs[k] = ps
	}
	q.last = ps
	return ps
}

// sweepLocked forgets publishers with nothing outstanding (on node, or on
// every node when node is ""): their state is all zero, so nothing is lost.
func (q *queue) sweepLocked(node string) {
	for k, ps := range q.pubs {
		if ps.queued == 0 && ps.queuedBytes == 0 && (node == "" || k.node == node) {
			delete(q.pubs, k)
		}
	}
	q.last = nil
}

// handler receives the subscriber's frames from the node. Both methods run
// on a connection's read loop and never block.
type handler Subscriber

// HandleFrame copies an event into the queue.
func (h *handler) HandleFrame(from string, f *wire.Frame) {
	if f.Kind != wire.KindEvent {
		return
	}
	s := (*Subscriber)(h)
	s.qmu.Lock()
	if s.exited {
		s.received++ // and abandoned: the delivery goroutine is gone
		s.qmu.Unlock()
		s.abandoned.Add(1)
		return
	}
	ps := s.pubLocked(from, f.Header.From)
	if ps.queued >= s.hardLimit || ps.queuedBytes >= s.hardBytes {
		s.overflow++
		s.qmu.Unlock()
		return
	}
	ps.queued++
	ps.queuedBytes += int64(len(f.Header.Name) + len(f.Payload))
	s.received++
	b := s.in
	off := len(b.buf)
	b.buf = append(b.buf, f.Payload...)
	b.evs = append(b.evs, event{topic: f.Header.Name, pub: ps, off: off, end: len(b.buf)})
	w := s.signalLocked()
	s.qmu.Unlock()
	if w {
		s.kick()
	}
}

// PeerDown forgives the credits of the events still held from publishers on
// node: they reset their windows, as the events in flight are lost.
func (h *handler) PeerDown(node string) {
	s := (*Subscriber)(h)
	s.qmu.Lock()
	for k, ps := range s.pubs {
		if k.node == node {
			ps.forgive, ps.forgiveBytes = ps.queued, ps.queuedBytes
		}
	}
	s.sweepLocked(node)
	s.qmu.Unlock()
}

// run is the delivery goroutine: it hands events to the handlers in order
// and returns credits.
func (s *Subscriber) run(port *mesh.Port) {
	defer close(s.done)
	var (
		owed  []*pubState
		spare *batch
		cache = deliveryCache{hs: map[string][]HandlerFunc{}}
		msg   Message
	)
	for {
		s.qmu.Lock()
		if spare != nil {
			s.spare, spare = spare, nil
		}
		for len(s.in.evs) == 0 {
			if len(owed) > 0 {
				// Idle: return the credits before sleeping, so publishers
				// start the next burst with their whole window.
				s.qmu.Unlock()
				owed = s.flushCredits(port, owed, s.idleCredits, s.idleBytes)
				s.qmu.Lock()
				if len(s.in.evs) > 0 {
					break
				}
			}
			if s.closing {
				s.exited = true
				s.qmu.Unlock()
				return
			}
			s.sleeping = true
			s.qmu.Unlock()
			<-s.wake
			s.qmu.Lock()
		}
		b := s.in
		if s.spare != nil {
			s.in, s.spare = s.spare, nil
		} else {
			s.in = &batch{}
		}
		s.qmu.Unlock()

		for i := range b.evs {
			e := &b.evs[i]
			if s.abandon.Load() {
				s.abandoned.Add(1)
			} else {
				s.deliver(&cache, &msg, e.topic, e.pub.key.node, b.buf[e.off:e.end])
			}
			ps := e.pub
			ps.owed++
			ps.owedBytes += int64(len(e.topic) + e.end - e.off)
			if !ps.listed {
				ps.listed = true
				owed = append(owed, ps)
			}
			if ps.owed >= s.creditBatch || ps.owedBytes >= s.byteBatch {
				s.sendCredits(port, ps)
			}
		}
		msg = Message{}
		b.reset()
		spare = b
	}
}

// flushCredits returns the credits owed to each listed publisher when they
// are at least least events or leastBytes bytes, and returns the list of
// publishers still owed. What it keeps back is far less than a window, so
// a waiting publisher always has the credits for its next event (see
// publisher's target.take).
func (s *Subscriber) flushCredits(port *mesh.Port, owed []*pubState, least int, leastBytes int64) []*pubState {
	out := owed[:0]
	for _, ps := range owed {
		if ps.owed >= least || ps.owedBytes >= leastBytes {
			s.sendCredits(port, ps)
		}
		if ps.owed > 0 {
			out = append(out, ps)
		} else {
			ps.listed = false
		}
	}
	clear(owed[len(out):])
	return out
}

// sendCredits returns ps's owed credits to its publisher, less those
// forgiven after a lost connection.
func (s *Subscriber) sendCredits(port *mesh.Port, ps *pubState) {
	n, nb := ps.owed, ps.owedBytes
	ps.owed, ps.owedBytes = 0, 0
	s.qmu.Lock()
	ps.queued -= n
	ps.queuedBytes -= nb
	f, fb := min(ps.forgive, n), min(ps.forgiveBytes, nb)
	ps.forgive -= f
	ps.forgiveBytes -= fb
	s.qmu.Unlock()
	if n -= f; n <= 0 {
		return
	}
	// Seq carries the events credited, Deadline their bytes.
	h := wire.Header{To: ps.key.id, Seq: uint64(n), Deadline: nb - fb}
	// Post queues the frame without a system call of our own; without a
	// connection at hand, Send dials.
	err := port.Post(ps.key.node, wire.KindCredit, &h, nil)
	if err != nil {
		err = port.Send(s.ctx, ps.key.node, wire.KindCredit, &h, nil)
	}
	if err != nil {
		// The connection is gone (the publisher resets its window) or we
		// are closing: nothing to do.
		s.log.Debug("subscriber: credits not returned", "node", ps.key.node, "err", err)
	}
}

// NodeClosing is called by the node as it closes: the component closes at
// once, failing what it still holds.
func (h *handler) NodeClosing() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	(*Subscriber)(h).Close(ctx)
}
