package mesh

import (
	"fmt"
	"slices"
	"strings"
)

// Kind is the role of a component.
type Kind uint8

// Component kinds.
const (
	KindRequester Kind = iota + 1
	KindResponder
	KindPublisher
	KindSubscriber
)

func (k Kind) String() string {
	switch k {
	case KindRequester:
		return "requester"
	case KindResponder:
		return "responder"
	case KindPublisher:
		return "publisher"
	case KindSubscriber:
		return "subscriber"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// State is a component's lifecycle state.
type State uint8

// Component states.
const (
	// StateActive components take new work.
	StateActive State = iota
	// StateDraining components finish what they have but take nothing new.
	StateDraining
)

func (s State) String() string {
	switch s {
	case StateActive:
		return "active"
	case StateDraining:
		return "draining"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Component is one entry of the service catalogue: a requester, responder,
// publisher or subscriber on some node of the mesh.
type Component struct {
	Node        string   `msgpack:"-"`           // ID of the node that hosts it
	Addr        string   `msgpack:"-"`           // that node's data address
	ID          uint64   `msgpack:"i"`           // unique within its node
	Kind        Kind     `msgpack:"k"`           // role
	Name        string   `msgpack:"n,omitempty"` // the name given by its code
	Environment string   `msgpack:"e,omitempty"`
	Key         string   `msgpack:"y,omitempty"`
	Namespace   string   `msgpack:"s,omitempty"`
	Handles     []string `msgpack:"h,omitempty"` // request types or topic patterns
	Subset      string   `msgpack:"b,omitempty"` // responders: their subset
	Group       string   `msgpack:"g,omitempty"` // subscribers: their queue group
	State       State    `msgpack:"t,omitempty"`
	Buffer      int      `msgpack:"f,omitempty"`  // subscribers: events they buffer (the flow-control window)
	BufferBytes int64    `msgpack:"fb,omitempty"` // subscribers: bytes of events they buffer (0: no byte bound)
	DropFull    bool     `msgpack:"d,omitempty"`  // subscribers: drop rather than wait when the buffer is full
}

// Peers reports whether c and o may talk: same environment, key and namespace.
func (c *Component) Peers(o *Component) bool {
	return c.Environment == o.Environment && c.Key == o.Key && c.Namespace == o.Namespace
}

func (c Component) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q on %s", c.Kind, c.Name, c.Node)
	if c.Key != "" {
		fmt.Fprintf(&b, " key=%s", c.Key)
	}
	if c.Namespace != "" {
		fmt.Fprintf(&b, " ns=%s", c.Namespace)
	}
	if len(c.Handles) > 0 {
		fmt.Fprintf(&b, " handles=%s", strings.Join(c.Handles, ","))
	}
	if c.State != StateActive {
		fmt.Fprintf(&b, " (%s)", c.State)
	}
	return b.String()
}

func (c *Component) clone() Component {
	out := *c
	out.Handles = slices.Clone(c.Handles)
	return out
}

func (c *Component) equal(o *Component) bool {
	return c.Node == o.Node && c.Addr == o.Addr && c.ID == o.ID && c.Kind == o.Kind && c.Name == o.Name &&
		c.Environment == o.Environment && c.Key == o.Key && c.Namespace == o.Namespace &&
		slices.Equal(c.Handles, o.Handles) && c.Subset == o.Subset && c.Group == o.Group &&
		c.State == o.State && c.Buffer == o.Buffer && c.BufferBytes == o.BufferBytes && c.DropFull == o.DropFull
}

// nodeState is what one node publishes about itself: its data address and
// its components, with a version that only grows.
type nodeState struct {
	Node       string      `msgpack:"n"`
	Version    uint64      `msgpack:"v"`
	Addr       string      `msgpack:"a"`
	Components []Component `msgpack:"c"`
	// Leaving is set by a node that is closing, so peers report its
	// departure as a leave rather than a failure.
	Leaving bool `msgpack:"l,omitempty"`
}

// View is an immutable snapshot of the catalogue as this node sees it.
type View struct {
	// Gen grows with every change of the catalogue or of peer reachability.
	Gen uint64
	// Components lists every component on every live member, sorted by node
	// and ID. Treat it as read-only.
	Components []Component
	// Unreachable holds nodes that are members but whose data connection is
	// down and being retried.
	Unreachable map[string]bool
	changed     chan struct{}
}

// Changed returns a channel closed when a newer view replaces this one.
func (v *View) Changed() <-chan struct{} { return v.changed }
