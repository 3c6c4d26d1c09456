package mesh

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/warrenmesh/warren/internal/wire"
)

// Handler receives the data-plane traffic of a component. It is the
// low-level interface behind warren's requester, responder, publisher and
// subscriber packages; applications use those packages instead.
//
// Both methods are called on a connection's read loop: they must not block,
// and f.Payload is valid only until HandleFrame returns. HandleFrame may run
// longer work (such as a request's handler) only once f.Lend() has returned
// true: the connection is then read on by another goroutine should the work
// last (see wire.Frame.Lend). A handler that also
// has a method NodeClosing() is told when its node closes (after its port
// was closed), so the component can fail its pending work and stop.
type Handler interface {
	HandleFrame(from string, f *wire.Frame)
	// PeerDown reports that the connection to a node closed or the node left.
	PeerDown(node string)
}

type nodeClosingNotifier interface{ NodeClosing() }

// Port is a component registered on a node: its catalogue entry and its
// way to send frames. See Handler.
type Port struct {
	n      *Node
	id     uint64
	h      Handler
	closed atomic.Bool
}

// Register adds a component to the catalogue and routes frames addressed to
// it to h. The component's Node, Addr, ID and Environment are filled in.
func (n *Node) Register(c Component, h Handler) (*Port, error) {
	if n.closing.Load() {
		return nil, ErrClosed
	}
	p := &Port{n: n, id: n.nextID.Add(1), h: h}
	c.ID, c.Node, c.Addr, c.Environment = p.id, n.id, n.dataAddr, n.cfg.env
	c.Handles = append([]string(nil), c.Handles...)
	n.compMu.Lock()
	n.comps[p.id] = p
	n.compsChangedLocked()
	n.compMu.Unlock()
	n.publishLocal(func(st *nodeState) { st.Components = append(st.Components, c) })
	return p, nil
}

// port returns the local component with id, or nil.
func (n *Node) port(id uint64) *Port { return n.compSnap.get(id) }

// compsChangedLocked publishes n.comps for port. n.compMu is held.
func (n *Node) compsChangedLocked() { n.compSnap.publish(n.comps) }

func (n *Node) notifyPeerDown(id string) {
	for _, p := range n.compSnap.current() {
		p.h.PeerDown(id)
	}
}

// ID returns the component's ID within its node.
func (p *Port) ID() uint64 { return p.id }

// Node returns the node the component is registered on.
func (p *Port) Node() *Node { return p.n }

// Update changes the component's catalogue entry (for example to mark it
// draining) and spreads the change.
func (p *Port) Update(fn func(*Component)) error {
	if p.closed.Load() {
		return ErrClosed
	}
	p.n.publishLocal(func(st *nodeState) {
		for i := range st.Components {
			if st.Components[i].ID == p.id {
				fn(&st.Components[i])
				st.Components[i].ID, st.Components[i].Node = p.id, p.n.id
			}
		}
	})
	return nil
}

// Send writes one frame to component h.To on node. It returns once the frame
// is queued on the connection (it may wait for buffer space, or for the
// first connection to the node). Errors wrap ErrUnreachable, ErrUnknownPeer,
// ErrClosed, wire.ErrFrameTooLarge or ctx's error. A closed port may still
// send responses, so that no request it received goes unanswered.
func (p *Port) Send(ctx context.Context, node string, kind wire.Kind, h *wire.Header, payload []byte) error {
	return p.send(ctx, node, kind, h, payload, false)
}

// SendNow is Send for a frame that no other is known to be on its way to
// join: it is written at once, without the writer's wait for company (see
// wire.Writer.WriteFrameNow), which saves a scheduler round trip when
// frames are sent one at a time.
func (p *Port) SendNow(ctx context.Context, node string, kind wire.Kind, h *wire.Header, payload []byte) error {
	return p.send(ctx, node, kind, h, payload, true)
}

func (p *Port) send(ctx context.Context, node string, kind wire.Kind, h *wire.Header, payload []byte, now bool) error {
	if p.closed.Load() && kind != wire.KindResponse {
		return ErrClosed
	}
	c, err := p.n.connTo(ctx, node)
	if err != nil {
		return err
	}
	h.From = p.id
	if !now {
		c.company()
	}
	if err := writeFrame(ctx, c.w, kind, h, payload, now); err != nil {
		if errors.Is(err, wire.ErrFrameTooLarge) || ctx.Err() != nil {
			return err
		}
		c.close() // the connection is broken: the read loop cleans up
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, node, err)
	}
	return nil
}

// Reply writes a response on back, the Writer of the connection the
// request came in on (its frame's Back), saving the lookup of node's
// connection that Send makes; node is the requester's node. now says no
// other frame is on its way to join this one's write (see
// wire.Writer.WriteFrameNow). A reply that finds back closed fails (the
// requester learns of the lost connection from its own side). Errors are
// Send's.
func (p *Port) Reply(ctx context.Context, back *wire.Writer, node string, h *wire.Header, payload []byte, now bool) error {
	if back == nil {
		return p.send(ctx, node, wire.KindResponse, h, payload, now)
	}
	h.From = p.id
	if err := writeFrame(ctx, back, wire.KindResponse, h, payload, now); err != nil {
		if errors.Is(err, wire.ErrFrameTooLarge) || ctx.Err() != nil {
			return err
		}
		if c := p.n.connOf(node, back); c != nil {
			c.close() // the connection is broken: the read loop cleans up
		}
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, node, err)
	}
	return nil
}

func writeFrame(ctx context.Context, w *wire.Writer, kind wire.Kind, h *wire.Header, payload []byte, now bool) error {
	if now {
		return w.WriteFrameNow(ctx, kind, h, payload)
	}
	return w.WriteFrame(ctx, kind, h, payload)
}

// Post sends a small frame like Send but never blocks, for replies sent
// from HandleFrame (a connection's read loop): it fails at once when there
// is no connection to node, and does not wait for buffer space.
func (p *Port) Post(node string, kind wire.Kind, h *wire.Header, payload []byte) error {
	if p.closed.Load() && kind != wire.KindResponse {
		return ErrClosed
	}
	c, err := p.n.connNow(node)
	if err != nil {
		return err
	}
	h.From = p.id
	return c.w.Post(kind, h, payload)
}

// Close removes the component from the catalogue; frames for it are refused
// from now on (requests are answered "rejected", so they are resent
// elsewhere).
func (p *Port) Close() {
	if !p.closed.CompareAndSwap(false, true) {
		return
	}
	n := p.n
	n.compMu.Lock()
	delete(n.comps, p.id)
	n.compsChangedLocked()
	n.compMu.Unlock()
	n.publishLocal(func(st *nodeState) {
		out := st.Components[:0]
		for _, c := range st.Components {
			if c.ID != p.id {
				out = append(out, c)
			}
		}
		st.Components = out
	})
}

// MaxFrame returns the largest frame the node sends or accepts.
func (n *Node) MaxFrame() int { return n.cfg.maxFrame }
