package mesh

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/warrenmesh/warren/internal/wire"
)

// Gossip message types (first byte of a memberlist user message).
const (
	msgState  byte = 1 // one nodeState
	msgStates byte = 2 // push/pull: every nodeState the sender knows
	metaV1         = "1|"
)

// Bounds on what a peer's gossip may make us hold.
const (
	maxComponentsPerNode = 4096
	maxStatesPerPull     = 16384
	// gossipLimit is the largest state sent by UDP gossip; larger states go
	// to every member over memberlist's reliable channel instead.
	gossipLimit = 1000
	// tombstoneTTL is how long the state of a departed node is kept, in
	// case failure detection was wrong and it comes back.
	tombstoneTTL = 10 * time.Minute
)

type delegate Node

func (d *delegate) node() *Node { return (*Node)(d) }

// NodeMeta carries the data address, so peers can dial before the
// catalogue arrives.
func (d *delegate) NodeMeta(limit int) []byte {
	n := d.node()
	m := metaV1 + n.dataAddr
	if len(m) > limit {
		return nil
	}
	return []byte(m)
}

func (d *delegate) NotifyMsg(b []byte) {
	n := d.node()
	if len(b) < 2 || b[0] != msgState {
		n.log.Debug("gossip: ignoring unknown message", "len", len(b))
		return
	}
	if err := checkGossip(b[1:]); err != nil {
		n.log.Info("gossip: catalogue state refused", "err", err)
		return
	}
	var st nodeState
	if err := msgpack.Unmarshal(b[1:], &st); err != nil {
		n.log.Warn("gossip: malformed catalogue state", "err", err)
		return
	}
	if n.mergeStates([]nodeState{st}) > 0 && len(b) <= gossipLimit {
		// memberlist does not relay user broadcasts: pass news on, as serf
		// does, so a change spreads epidemically to the whole mesh.
		n.bq.QueueBroadcast(&stateBroadcast{node: st.Node, version: st.Version, msg: bytes.Clone(b)})
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.node().bq.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(join bool) []byte {
	n := d.node()
	n.catMu.Lock()
	all := make([]nodeState, 0, len(n.states))
	for id, st := range n.states {
		if _, ok := n.members[id]; ok {
			all = append(all, *st)
		}
	}
	b, err := msgpack.Marshal(all)
	n.catMu.Unlock()
	if err != nil {
		n.log.Error("gossip: encode catalogue", "err", err)
		return nil
	}
	return append([]byte{msgStates}, b...)
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	n := d.node()
	if len(buf) < 1 || buf[0] != msgStates {
		return
	}
	if err := checkGossip(buf[1:]); err != nil {
		n.log.Info("gossip: catalogue push/pull refused", "err", err)
		return
	}
	var all []nodeState
	if err := msgpack.Unmarshal(buf[1:], &all); err != nil {
		n.log.Warn("gossip: malformed catalogue push/pull", "err", err)
		return
	}
	if len(all) > maxStatesPerPull {
		n.log.Info("gossip: oversized catalogue push/pull ignored", "states", len(all))
		return
	}
	n.mergeStates(all)
}

// mergeStates keeps, per node, the newest state (our own is authoritative)
// and returns how many states were news.
func (n *Node) mergeStates(in []nodeState) int {
	n.catMu.Lock()
	defer n.catMu.Unlock()
	changed := 0
	for i := range in {
		st := &in[i]
		if st.Node == "" || st.Node == n.id || len(st.Components) > maxComponentsPerNode {
			continue
		}
		if cur, ok := n.states[st.Node]; ok && cur.Version >= st.Version {
			continue
		}
		for j := range st.Components {
			c := &st.Components[j]
			c.Node, c.Addr = st.Node, st.Addr
		}
		n.states[st.Node] = st
		changed++
	}
	if changed > 0 {
		n.rebuildLocked()
	}
	return changed
}

type events Node

func (e *events) NotifyJoin(m *memberlist.Node) {
	n := (*Node)(e)
	if m.Name == n.id {
		return
	}
	mem := memberFrom(m)
	// The peer first: once Members, the catalogue or an event shows the
	// node, Send to it must find it (not fail with ErrUnknownPeer).
	n.peerUp(m.Name, mem.DataAddr)
	n.catMu.Lock()
	// A node falsely declared dead comes back by refuting; memberlist's word
	// is final, and its last known state becomes visible again.
	delete(n.left, m.Name)
	_, doubted := n.doubted[m.Name]
	delete(n.doubted, m.Name)
	n.members[m.Name] = mem
	n.rebuildLocked()
	if !doubted { // a doubted node never left, as far as users could see
		n.emitLocked(Event{Type: NodeJoined, Node: m.Name, Member: mem})
	}
	n.catMu.Unlock()
	if doubted {
		n.log.Info("gossip counts the peer alive again", "peer", m.Name)
	}
}

func (e *events) NotifyLeave(m *memberlist.Node) {
	n := (*Node)(e)
	if m.Name == n.id {
		return
	}
	n.catMu.Lock()
	if _, ok := n.doubted[m.Name]; ok {
		n.catMu.Unlock()
		return // already being checked
	}
	_, member := n.members[m.Name]
	if !n.leavingLocked(m.Name) && member && !n.closing.Load() {
		// A failure verdict, which gossip can reach by mistake (lost UDP
		// probes, a starved process). A data connection that still answers
		// is checked first: its peer is alive and reachable, and dropping
		// it would fail requests and lose events for nothing.
		if c := n.liveConn(m.Name); c != nil {
			n.doubted[m.Name] = struct{}{}
			n.wg.Add(1)
			go n.checkVerdict(m.Name, c)
			n.catMu.Unlock()
			return
		}
	}
	n.catMu.Unlock()
	n.depart(m.Name)
}

// leavingLocked reports whether node id announced a graceful leave.
// memberlist's Node.State is not updated before NotifyLeave, so a graceful
// leave is recognised by the "leaving" flag the node announced. n.catMu
// must be held.
func (n *Node) leavingLocked(id string) bool {
	st := n.states[id]
	return st != nil && st.Leaving
}

// depart removes a node that gossip says is gone: from the catalogue, with
// an event, and its connection.
func (n *Node) depart(id string) {
	n.catMu.Lock()
	// Gossip does not order the "leaving" flag before the leave itself, so
	// when it is not here yet the verdict waits a moment for it.
	leaving := n.leavingLocked(id)
	delete(n.doubted, id)
	mem, ok := n.members[id]
	delete(n.members, id)
	// Its state stays (invisible while it is not a member) in case it comes
	// back, and is forgotten after a while.
	now := time.Now()
	n.left[id] = now
	for id, t := range n.left {
		if now.Sub(t) > tombstoneTTL {
			delete(n.left, id)
			delete(n.states, id)
		}
	}
	if ok {
		n.rebuildLocked()
		if leaving {
			n.emitLocked(Event{Type: NodeLeft, Node: id, Member: mem})
		} else if !n.closing.Load() {
			n.wg.Add(1)
			go n.classifyDeparture(mem)
		}
	}
	n.catMu.Unlock()
	n.log.Debug("peer gone", "peer", id, "announced_leave", leaving)
	n.peerGone(id)
}

// Checking a failure verdict against the data connection: the peer must
// answer a ping within verdictPingWait, then again every verdictRecheck,
// until gossip counts it alive again (it refutes the verdict within a
// second or two when it is merely slow), for at most verdictMaxDoubt.
const (
	verdictPingWait = 500 * time.Millisecond
	verdictRecheck  = time.Second
	verdictMaxDoubt = 30 * time.Second
)

// checkVerdict decides whether peer id, which gossip declared failed while
// connection c was up, departs after all.
func (n *Node) checkVerdict(id string, c *conn) {
	defer n.wg.Done()
	start := time.Now()
	for first := true; ; first = false {
		alive := n.pingConn(c, verdictPingWait)
		n.catMu.Lock()
		_, still := n.doubted[id]
		n.catMu.Unlock()
		switch {
		case !still:
			return // gossip counts it alive again, or it departed meanwhile
		case n.ctx.Err() != nil:
			return
		case !alive:
			if !first {
				n.log.Info("peer stopped answering on its data connection; it is gone", "peer", id)
			}
			n.depart(id)
			return
		case time.Since(start) >= verdictMaxDoubt:
			n.log.Warn("gossip still counts the peer failed, though it answers on its data connection; dropping it", "peer", id, "after", verdictMaxDoubt)
			n.depart(id)
			return
		case first:
			n.log.Info("gossip declared the peer failed, but it answers on its data connection; keeping it", "peer", id)
		}
		t := time.NewTimer(verdictRecheck)
		select {
		case <-t.C:
		case <-n.ctx.Done():
			t.Stop()
			return
		}
	}
}

// pingConn reports whether the peer of c answers a ping within wait.
func (n *Node) pingConn(c *conn, wait time.Duration) bool {
	seq := c.pings.Add(1)
	if err := c.w.Post(wire.KindPing, &wire.Header{Seq: seq}, nil); err != nil {
		return false
	}
	deadline := time.Now().Add(wait)
	for c.pong.Load() < seq {
		if time.Now().After(deadline) || n.ctx.Err() != nil || c.closed.Load() {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// leaveVerdictWait is how long a departure without an announced leave waits
// for a late "leaving" state before it is reported as a failure.
const leaveVerdictWait = 750 * time.Millisecond

func (n *Node) classifyDeparture(mem Member) {
	defer n.wg.Done()
	t := time.NewTimer(leaveVerdictWait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-n.ctx.Done():
		return
	}
	n.catMu.Lock()
	defer n.catMu.Unlock()
	if _, back := n.members[mem.ID]; back {
		return // it refuted the failure and rejoined meanwhile
	}
	typ := NodeFailed
	if st := n.states[mem.ID]; st != nil && st.Leaving {
		typ = NodeLeft
	}
	n.emitLocked(Event{Type: typ, Node: mem.ID, Member: mem})
}

func (e *events) NotifyUpdate(m *memberlist.Node) {
	n := (*Node)(e)
	if m.Name == n.id {
		return
	}
	mem := memberFrom(m)
	n.peerUp(m.Name, mem.DataAddr) // first, as in NotifyJoin
	n.catMu.Lock()
	if _, ok := n.members[m.Name]; ok {
		n.members[m.Name] = mem
	}
	n.catMu.Unlock()
}

func memberFrom(m *memberlist.Node) Member {
	mem := Member{ID: m.Name, Addr: m.Address()}
	if i := strings.LastIndexByte(m.Name, '-'); i > 0 {
		mem.Name = m.Name[:i]
	}
	if meta := string(m.Meta); strings.HasPrefix(meta, metaV1) {
		mem.DataAddr = meta[len(metaV1):]
	}
	return mem
}

// rebuildLocked publishes a new View from the states of live members and
// emits component events for what changed. n.catMu must be held.
func (n *Node) rebuildLocked() {
	old := n.view.Load()
	var comps []Component
	for id, st := range n.states {
		if _, ok := n.members[id]; !ok || st.Leaving {
			// A node that said goodbye offers nothing any more, even while
			// its leave is still travelling through gossip.
			continue
		}
		comps = append(comps, st.Components...)
	}
	slices.SortFunc(comps, func(a, b Component) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	n.gen++
	unreach := make(map[string]bool, len(old.Unreachable))
	for id := range old.Unreachable {
		if _, ok := n.members[id]; ok {
			unreach[id] = true
		}
	}
	v := &View{Gen: n.gen, Components: comps, Unreachable: unreach, changed: make(chan struct{})}
	n.view.Store(v)
	close(old.changed)
	n.diffLocked(old.Components, comps)
}

// markLeaving records that a peer said goodbye.
func (n *Node) markLeaving(id string) {
	n.catMu.Lock()
	if st := n.states[id]; st != nil && !st.Leaving {
		st.Leaving = true
		n.rebuildLocked()
	}
	n.catMu.Unlock()
}

// setReachable marks a member's data connection up or down.
func (n *Node) setReachable(id string, up bool) {
	n.catMu.Lock()
	defer n.catMu.Unlock()
	old := n.view.Load()
	if old.Unreachable[id] == !up {
		return
	}
	if _, member := n.members[id]; !member && !up {
		return
	}
	unreach := make(map[string]bool, len(old.Unreachable)+1)
	for k := range old.Unreachable {
		unreach[k] = true
	}
	if up {
		delete(unreach, id)
	} else {
		unreach[id] = true
	}
	n.gen++
	v := &View{Gen: n.gen, Components: old.Components, Unreachable: unreach, changed: make(chan struct{})}
	n.view.Store(v)
	close(old.changed)
}

func (n *Node) diffLocked(old, cur []Component) {
	if len(n.watchers) == 0 {
		return
	}
	type key struct {
		node string
		id   uint64
	}
	prev := make(map[key]*Component, len(old))
	for i := range old {
		prev[key{old[i].Node, old[i].ID}] = &old[i]
	}
	for i := range cur {
		c := &cur[i]
		k := key{c.Node, c.ID}
		if p, ok := prev[k]; ok {
			if !p.equal(c) {
				n.emitLocked(Event{Type: ComponentChanged, Node: c.Node, Component: c.clone()})
			}
			delete(prev, k)
			continue
		}
		n.emitLocked(Event{Type: ComponentAdded, Node: c.Node, Component: c.clone()})
	}
	for _, p := range prev {
		n.emitLocked(Event{Type: ComponentRemoved, Node: p.Node, Component: p.clone()})
	}
}

// publishLocal bumps our state's version, updates our view and spreads the
// state: by gossip when small, reliably to every member when large.
func (n *Node) publishLocal(mutate func(*nodeState)) {
	n.catMu.Lock()
	mutate(&n.local)
	n.local.Version++
	st := cloneState(&n.local)
	n.states[n.id] = st
	n.rebuildLocked()
	b, err := msgpack.Marshal(st)
	n.catMu.Unlock()
	if err != nil {
		n.log.Error("gossip: encode own state", "err", err)
		return
	}
	msg := append([]byte{msgState}, b...)
	if len(msg) <= gossipLimit {
		n.bq.QueueBroadcast(&stateBroadcast{node: n.id, version: st.Version, msg: msg})
		return
	}
	// memberlist's own *Node values are mutated under its lock, so address
	// peers through copies.
	for _, m := range n.Members() {
		if m.ID == n.id {
			continue
		}
		host, port, err := net.SplitHostPort(m.Addr)
		if err != nil {
			continue
		}
		p, _ := strconv.Atoi(port)
		to := &memberlist.Node{Name: m.ID, Addr: net.ParseIP(host), Port: uint16(p)}
		if err := n.ml.SendReliable(to, msg); err != nil {
			n.log.Debug("gossip: send state", "peer", m.ID, "err", err)
		}
	}
}

func cloneState(st *nodeState) *nodeState {
	out := *st
	out.Components = make([]Component, len(st.Components))
	for i := range st.Components {
		out.Components[i] = st.Components[i].clone()
	}
	return &out
}

type stateBroadcast struct {
	node    string
	version uint64
	msg     []byte
}

func (b *stateBroadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*stateBroadcast)
	return ok && ob.node == b.node && ob.version <= b.version
}
func (b *stateBroadcast) Message() []byte { return b.msg }
func (b *stateBroadcast) Finished()       {}

// gossipLogger turns memberlist's "[LEVEL] memberlist: ..." lines into slog
// records. memberlist is chatty about routine events, so its warnings are
// logged at info and its errors at warn.
type gossipLogger struct{ l *slog.Logger }

func newGossipLogger(l *slog.Logger) *log.Logger {
	return log.New(gossipLogger{l}, "", 0)
}

func (g gossipLogger) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(msg, "[ERR]"):
		level = slog.LevelWarn
	case strings.HasPrefix(msg, "[WARN]"):
		level = slog.LevelInfo
	}
	if i := strings.Index(msg, "] "); i >= 0 {
		msg = msg[i+2:]
	}
	if g.l.Enabled(context.Background(), level) {
		g.l.Log(context.Background(), level, fmt.Sprintf("gossip: %s", msg))
	}
	return len(p), nil
}
