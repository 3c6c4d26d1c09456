package requester

import "sync/atomic"

// Target is a responder a request may go to.
type Target struct {
	Node      string // node ID
	Component uint64 // component ID within the node
	Subset    string
	Pending   int // requests this requester has in flight to it (left at 0 for RoundRobin, which ignores it)
}

// Balancer picks a responder for each request. Pick gets a non-empty,
// read-only list of eligible targets, stable in order for a given
// catalogue, and returns an index into it. It is called concurrently.
type Balancer interface {
	Pick(targets []Target) int
}

// RoundRobin returns the default balancer: each request goes to the next
// responder in turn, fairly as responders come and go.
func RoundRobin() Balancer { return &roundRobin{} }

type roundRobin struct{ n atomic.Uint64 }

func (r *roundRobin) Pick(targets []Target) int {
	return int((r.n.Add(1) - 1) % uint64(len(targets)))
}

// LeastPending returns a balancer that sends each request to the responder
// with the fewest requests in flight from this requester, breaking ties
// round-robin (cote's PendingBalancedRequester). It suits uneven handlers.
func LeastPending() Balancer { return &leastPending{} }

type leastPending struct{ n atomic.Uint64 }

func (l *leastPending) Pick(targets []Target) int {
	start := int(l.n.Add(1) % uint64(len(targets)))
	best := start
	for i := range targets {
		j := (start + i) % len(targets)
		if targets[j].Pending < targets[best].Pending {
			best = j
		}
	}
	return best
}
