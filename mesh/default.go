package mesh

import (
	"context"
	"sync"
)

var def struct {
	sync.Mutex
	n *Node
}

// Default returns the process-wide node, creating it on first use from the
// WARREN_* environment variables. Components use it when they are not
// given a node. Close it with CloseDefault when the process ends.
func Default() (*Node, error) {
	def.Lock()
	defer def.Unlock()
	if def.n != nil && !def.n.closing.Load() {
		return def.n, nil
	}
	n, err := New()
	if err != nil {
		return nil, err
	}
	def.n = n
	return n, nil
}

// CloseDefault closes the process-wide node, if it was created.
func CloseDefault(ctx context.Context) error {
	def.Lock()
	n := def.n
	def.n = nil
	def.Unlock()
	if n == nil {
		return nil
	}
	return n.Close(ctx)
}
