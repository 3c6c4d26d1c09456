package mesh_test

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/mesh"
)

// The catalogue's gossip decoders, fuzzed through the delegate exactly as
// memberlist feeds it bytes from the network: NotifyMsg (one node's state,
// broadcast over UDP or sent reliably) and MergeRemoteState (every state, in
// a TCP push/pull). Seed corpora are in testdata/fuzz/FuzzGossip*.

// fuzzPeer is a member the fuzzed node believes in, so states for it reach
// the catalogue, the view and the watchers.
const fuzzPeer = "fuzz-peer-0123abcd"

// fuzzNode is one loopback node (mDNS off, quiet) that every input goes to,
// with a watcher that formats every event.
func fuzzNode(f *testing.F) *mesh.Node {
	n := meshtest.Node(f, mesh.WithLogger(slog.New(slog.DiscardHandler)))
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	n.Watch(ctx, func(e mesh.Event) { _ = e.String() })
	return n
}

func seedStates() []mesh.TestState {
	return []mesh.TestState{
		{Node: fuzzPeer, Version: 3, Addr: "10.0.0.7:40001", Components: []mesh.Component{
			{ID: 1, Kind: mesh.KindResponder, Name: "validation", Handles: []string{"validate", "card.*"}, Subset: "eu"},
			{ID: 2, Kind: mesh.KindSubscriber, Name: "monitor", Handles: []string{"payment.**"}, Group: "g", Buffer: 64, DropFull: true},
			{ID: 3, Kind: mesh.KindRequester, Name: "payments", Key: "k", Namespace: "ns", State: mesh.StateDraining},
		}},
		{Node: fuzzPeer, Version: 4, Addr: "10.0.0.7:40001", Leaving: true},
		{Node: "stranger-99", Version: 1, Addr: "[fd00::1]:1", Components: []mesh.Component{{ID: 9, Kind: 200}}},
	}
}

// bombs claim far more than they hold: arrays of 2^32-1 components, node
// states or handled types, and deep nesting.
func bombs(kind byte) [][]byte {
	huge := []byte{0xdd, 0xff, 0xff, 0xff, 0xff}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return [][]byte{
		cat([]byte{kind, 0x81, 0xa1, 'c'}, huge),
		cat([]byte{kind, 0x91, 0x81, 0xa1, 'c'}, huge),
		cat([]byte{kind, 0x81, 0xa1, 'c', 0x91, 0x81, 0xa1, 'h'}, huge),
		cat([]byte{kind}, huge),
		cat([]byte{kind}, bytes.Repeat([]byte{0x91}, 200)),
		cat([]byte{kind, 0xdc, 0x10, 0x01}, bytes.Repeat([]byte{0x80}, 4097)), // 4097 empty states
		{kind, 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'},                             // a 4 GiB string
		{kind, 0xc1},
		{kind},
		{},
	}
}

// boundedCall runs fn and fails if it allocated more than a fixed amount
// plus a multiple of the input's size.
func boundedCall(t *testing.T, size int, fn func()) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	limit := uint64(4<<20 + 1024*size)
	if got := after.TotalAlloc - before.TotalAlloc; got > limit {
		t.Fatalf("%d-byte input allocated %d bytes, limit %d", size, got, limit)
	}
}

// checkCatalogue checks what the fuzzed node shows: only components of live
// members (itself and fuzzPeer), at most the per-node bound of them.
func checkCatalogue(t *testing.T, n *mesh.Node) {
	comps := n.Catalogue()
	if len(comps) > mesh.MaxComponentsPerNode {
		t.Fatalf("%d components in the catalogue", len(comps))
	}
	for _, c := range comps {
		if c.Node != fuzzPeer && c.Node != n.ID() {
			t.Fatalf("component of non-member %q visible: %v", c.Node, c)
		}
		_ = c.String()
	}
}

func FuzzGossipState(f *testing.F) {
	for _, s := range seedStates() {
		f.Add(mesh.StateMessage(s))
	}
	for _, b := range bombs(1) {
		f.Add(b)
	}
	n := fuzzNode(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		defer mesh.ForgetStates(n)
		mesh.FakeMember(n, fuzzPeer)
		boundedCall(t, len(b), func() { mesh.GossipNotify(n, b) })
		if held := mesh.HeldStates(n); held > 2 {
			t.Fatalf("one message left %d states", held)
		}
		checkCatalogue(t, n)
	})
}

func FuzzGossipPushPull(f *testing.F) {
	f.Add(mesh.StatesMessage(seedStates()...))
	f.Add(mesh.StatesMessage())
	for _, b := range bombs(2) {
		f.Add(b)
	}
	n := fuzzNode(f)
	f.Add(mesh.GossipLocalState(n))
	f.Fuzz(func(t *testing.T, b []byte) {
		defer mesh.ForgetStates(n)
		mesh.FakeMember(n, fuzzPeer)
		boundedCall(t, len(b), func() {
			mesh.GossipMerge(n, b, len(b)%2 == 0)
		})
		checkCatalogue(t, n)
		// What the node now sends on is well-formed and within bounds.
		if err := mesh.CheckGossip(mesh.GossipLocalState(n)[1:]); err != nil {
			t.Fatalf("local state: %v", err)
		}
	})
}

// FuzzCheckGossip compares the bound check with msgpack's own parser: what
// it accepts, msgpack can skip over; what it refuses for a reason other
// than its limits (depth, element count, extensions that msgpack would
// read as maps), msgpack cannot parse either.
func FuzzCheckGossip(f *testing.F) {
	for _, b := range bombs(0) {
		if len(b) > 0 {
			f.Add(b[1:])
		}
	}
	f.Add(mesh.StateMessage(seedStates()[0])[1:])
	f.Add(mesh.StatesMessage(seedStates()...)[1:])
	f.Add([]byte{0xc7, 0x02, 0x05, 'a', 'b'})      // ext8
	f.Add([]byte{0xd8, 0x01, 0, 0, 0, 0, 0, 0, 0}) // fixext16, truncated
	f.Fuzz(func(t *testing.T, b []byte) {
		err := mesh.CheckGossip(b)
		skipErr := msgpack.NewDecoder(bytes.NewReader(b)).Skip()
		switch {
		case err == nil && skipErr != nil:
			t.Fatalf("accepted, but msgpack cannot parse it: %v", skipErr)
		case err != nil && skipErr == nil && !strings.Contains(err.Error(), "deeper") && !strings.Contains(err.Error(), "more than") &&
			!strings.Contains(err.Error(), "extension value"): // limits and policy, not parse errors
			t.Fatalf("refused (%v), but msgpack parses it", err)
		}
	})
}
