package mesh

import (
	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"
)

// Test hooks for the fuzz targets and the hostile-input tests: they drive
// the gossip delegate exactly as memberlist does with bytes from the
// network.

// GossipNotify hands b to n's delegate as a gossip user message.
func GossipNotify(n *Node, b []byte) { (*delegate)(n).NotifyMsg(b) }

// GossipMerge hands b to n's delegate as the user state of a push/pull.
func GossipMerge(n *Node, b []byte, join bool) { (*delegate)(n).MergeRemoteState(b, join) }

// GossipLocalState returns the user state n sends in a push/pull.
func GossipLocalState(n *Node) []byte { return (*delegate)(n).LocalState(false) }

// TestState is a node's catalogue state as it travels in gossip.
type TestState struct {
	Node       string
	Version    uint64
	Addr       string
	Components []Component
	Leaving    bool
}

func (s TestState) internal() nodeState { return nodeState(s) }

// StateMessage encodes s as the gossip user message a node broadcasts.
func StateMessage(s TestState) []byte {
	b, err := msgpack.Marshal(s.internal())
	if err != nil {
		panic(err)
	}
	return append([]byte{msgState}, b...)
}

// StatesMessage encodes ss as push/pull user state.
func StatesMessage(ss ...TestState) []byte {
	all := make([]nodeState, len(ss))
	for i, s := range ss {
		all[i] = s.internal()
	}
	b, err := msgpack.Marshal(all)
	if err != nil {
		panic(err)
	}
	return append([]byte{msgStates}, b...)
}

// HeldStates reports how many node states n keeps, its own included.
func HeldStates(n *Node) int {
	n.catMu.Lock()
	defer n.catMu.Unlock()
	return len(n.states)
}

// ForgetStates drops every state n holds but its own, and every member
// added with FakeMember, as if n had just started.
func ForgetStates(n *Node) {
	live := map[string]bool{}
	for _, m := range n.ml.Members() { // before catMu: memberlist calls us with its lock held
		live[m.Name] = true
	}
	n.catMu.Lock()
	defer n.catMu.Unlock()
	for id := range n.states {
		if id != n.id {
			delete(n.states, id)
		}
	}
	for id := range n.members {
		if !live[id] {
			delete(n.members, id)
		}
	}
	n.rebuildLocked()
}

// FakeMember makes n treat id as a live member (without gossip), so the
// states it receives for id become visible in its catalogue.
func FakeMember(n *Node, id string) {
	n.catMu.Lock()
	defer n.catMu.Unlock()
	n.members[id] = Member{ID: id, Name: id}
	n.rebuildLocked()
}

// PeerEntries reports how many peers n keeps connection state for.
func PeerEntries(n *Node) int {
	n.peerMu.Lock()
	defer n.peerMu.Unlock()
	return len(n.peers)
}

// CheckGossip is checkGossip.
func CheckGossip(b []byte) error { return checkGossip(b) }

// Gossip message limits.
const (
	MaxGossipElems       = maxGossipElems
	MaxComponentsPerNode = maxComponentsPerNode
)

// Admit reports whether n would take in a member announced as m.
func Admit(n *Node, m *memberlist.Node) error { return (*admit)(n).NotifyAlive(m) }

// MaxGossipStreams is maxGossipStreams.
const MaxGossipStreams = maxGossipStreams
