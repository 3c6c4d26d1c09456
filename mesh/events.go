package mesh

import (
	"context"
	"fmt"
	"sync"
)

// EventType says what changed in the mesh.
type EventType uint8

// Event types.
const (
	NodeJoined EventType = iota + 1
	NodeLeft             // the node left gracefully
	NodeFailed           // failure detection declared the node dead
	ComponentAdded
	ComponentRemoved
	ComponentChanged // for example a responder started draining
)

func (t EventType) String() string {
	switch t {
	case NodeJoined:
		return "joined"
	case NodeLeft:
		return "left"
	case NodeFailed:
		return "failed"
	case ComponentAdded:
		return "component added"
	case ComponentRemoved:
		return "component removed"
	case ComponentChanged:
		return "component changed"
	}
	return fmt.Sprintf("event(%d)", uint8(t))
}

// Event is one change seen by this node.
type Event struct {
	Type      EventType
	Node      string    // ID of the node concerned
	Member    Member    // for node events
	Component Component // for component events
}

func (e Event) String() string {
	if e.Type <= NodeFailed {
		return fmt.Sprintf("node %s %s", e.Node, e.Type)
	}
	return fmt.Sprintf("%s: %s", e.Type, e.Component)
}

type watcher struct {
	fn     func(Event)
	mu     sync.Mutex
	queue  []Event
	signal chan struct{}
}

// Watch calls fn for every change of membership and catalogue from now on,
// in order, on a goroutine of its own, until ctx ends or the node closes.
// fn may block; events queue up meanwhile. Watch does not block.
func (n *Node) Watch(ctx context.Context, fn func(Event)) {
	w := &watcher{fn: fn, signal: make(chan struct{}, 1)}
	n.catMu.Lock()
	if n.closing.Load() {
		n.catMu.Unlock()
		return
	}
	n.watchers[w] = struct{}{}
	n.catMu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() {
			n.catMu.Lock()
			delete(n.watchers, w)
			n.catMu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-n.ctx.Done():
				return
			case <-w.signal:
			}
			w.mu.Lock()
			batch := w.queue
			w.queue = nil
			w.mu.Unlock()
			for _, e := range batch {
				if ctx.Err() != nil || n.ctx.Err() != nil {
					return
				}
				fn(e)
			}
		}
	}()
}

// emitLocked queues e for every watcher. n.catMu must be held.
func (n *Node) emitLocked(e Event) {
	for w := range n.watchers {
		w.mu.Lock()
		w.queue = append(w.queue, e)
		w.mu.Unlock()
		select {
		case w.signal <- struct{}{}:
		default:
		}
	}
}
