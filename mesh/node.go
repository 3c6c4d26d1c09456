package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/memberlist"
	"github.com/warrenmesh/warren/discovery"
)

// Node is one process's membership in the mesh. It owns the gossip agent,
// the data-plane listener, the service catalogue and one connection per
// peer, shared by every component of the process. It is safe for concurrent
// use.
type Node struct {
	cfg          config
	id           string
	log          *slog.Logger
	ml           *memberlist.Memberlist
	ownTransport bool // mc.Transport is warren's bounded transport, made by createGossip
	bq           *memberlist.TransmitLimitedQueue
	ln           net.Listener
	dataAddr     string
	start        time.Time

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	catMu   sync.Mutex
	states  map[string]*nodeState // by node ID, including self
	members map[string]Member     // live members by ID, including self
	left    map[string]time.Time  // departed IDs, never resurrected
	doubted map[string]struct{}   // members gossip declared failed, being checked (see checkVerdict)

	ignorePings atomic.Bool // tests only: leave data pings unanswered, as a frozen process does
	local       nodeState
	gen         uint64
	view        atomic.Pointer[View]

	compMu   sync.Mutex
	comps    map[uint64]*Port
	compSnap snapshot[uint64, *Port] // comps, for the lookup of every incoming frame
	nextID   atomic.Uint64

	peerMu   sync.Mutex
	peers    map[string]*peer
	peerSnap snapshot[string, *peer] // peers, for the lookup of every send

	joinMu     sync.Mutex
	candidates map[string]*candidate
	joinKick   chan struct{}

	watchers map[*watcher]struct{}

	self     *conn // loopback connection for components of this process
	closing  atomic.Bool
	closeMu  sync.Mutex
	closeErr error
	done     chan struct{}
}

// Member is a node of the mesh.
type Member struct {
	ID       string // unique node ID (name plus a random suffix)
	Name     string // the name the node was given
	Addr     string // gossip address, usable as a seed
	DataAddr string // data-plane address
}

type candidate struct {
	next     time.Time
	backoff  time.Duration
	inFlight bool
	seen     time.Time // last reported by discovery, or last seen a member
}

// New creates a node and starts finding peers in the background. With no
// options it is configured from WARREN_* variables and sensible defaults:
// gossip on port 7946 (or a free port if taken), mDNS discovery on every
// multicast interface, and seeds from WARREN_SEEDS.
func New(opts ...Option) (*Node, error) {
	cfg := defaults()
	if err := cfg.applyEnv(os.Getenv); err != nil {
		return nil, err
	}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.logger
	if log == nil {
		if cfg.logOff {
			log = slog.New(slog.DiscardHandler)
		} else {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
		}
	}
	id := cfg.name + "-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:8]
	n := &Node{
		cfg:        cfg,
		id:         id,
		log:        log.With("node", id),
		start:      time.Now(),
		states:     map[string]*nodeState{},
		members:    map[string]Member{},
		left:       map[string]time.Time{},
		doubted:    map[string]struct{}{},
		comps:      map[uint64]*Port{},
		peers:      map[string]*peer{},
		candidates: map[string]*candidate{},
		joinKick:   make(chan struct{}, 1),
		watchers:   map[*watcher]struct{}{},
		done:       make(chan struct{}),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.view.Store(&View{Unreachable: map[string]bool{}, changed: make(chan struct{})})
	if err := n.startGossip(); err != nil {
		n.cancel()
		return nil, err
	}
	n.startSelf()
	n.wg.Add(1)
	go n.acceptLoop()
	n.startDiscovery()
	n.log.Debug("mesh node started", "gossip", n.Addr(), "data", n.dataAddr)
	return n, nil
}

func (n *Node) startGossip() error {
	host, port, _ := splitHostPortDefault(n.cfg.bind)
	if port != 0 && n.cfg.bindIsDef && !portFree(host, port) {
		port = 0 // another node on this host has the default port
	}
	picked := port == 0 // ours to change if it is taken before we bind it
	if picked {
		p, err := pickPort(host)
		if err != nil {
			return fmt.Errorf("mesh: no free gossip port on %s: %w", host, err)
		}
		port = p
		if testHookPortPicked != nil {
			testHookPortPicked(host, port)
		}
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = n.id
	mc.BindAddr = host
	mc.BindPort = port
	mc.GossipInterval = 100 * time.Millisecond
	mc.PushPullInterval = 15 * time.Second
	mc.Logger = newGossipLogger(n.log)
	mc.Delegate = (*delegate)(n)
	mc.Events = (*events)(n)
	adv, err := n.advertiseHost(host)
	if err != nil {
		return err
	}
	if adv != "" {
		mc.AdvertiseAddr = adv
		mc.AdvertisePort = port
		if _, p, err := net.SplitHostPort(n.cfg.advertise); err == nil {
			if pn, _ := strconv.Atoi(p); pn > 0 {
				mc.AdvertisePort = pn
			}
		}
	}
	mc.Alive = (*admit)(n)
	mc.Merge = (*admit)(n)
	if n.cfg.gossip != nil {
		n.cfg.gossip(mc)
	}
	loopbackOnly(&n.cfg, host, mc)
	if len(mc.CIDRsAllowed) > 0 {
		// memberlist would refuse its own address and then crash.
		self := mc.AdvertiseAddr
		if self == "" {
			self = host
		}
		if ip := net.ParseIP(self); ip != nil && !ip.IsUnspecified() {
			if err := mc.IPAllowed(ip); err != nil {
				return fmt.Errorf("%w: this node's own address %s is outside the gossip CIDRsAllowed: %v", ErrInvalidConfig, self, err)
			}
		}
	}
	n.bq = &memberlist.TransmitLimitedQueue{NumNodes: n.numMembers, RetransmitMult: mc.RetransmitMult}

	// The data listener shares the gossip bind host and takes a free port.
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return fmt.Errorf("mesh: data listener on %s: %w", host, err)
	}
	n.ln = ln
	ml, err := n.createGossip(mc)
	for tries := 0; err != nil && (picked || n.cfg.bindIsDef) && isAddrInUse(err) && tries < 5; tries++ {
		// Another process on this host took the port (the default, or the
		// free one we picked) between our check and our bind (several
		// services starting at once): take another free port, as when the
		// port was already taken. A port the user chose is never changed.
		p, perr := pickPort(host)
		if perr != nil {
			break
		}
		mc.BindPort = p
		if mc.AdvertisePort == port {
			mc.AdvertisePort = p
		}
		port = p
		ml, err = n.createGossip(mc)
	}
	if err != nil {
		ln.Close()
		if strings.Contains(err.Error(), "no private IP") {
			return fmt.Errorf("mesh: cannot pick an address to advertise (set %s or WithAdvertiseAddr): %w", EnvAdvertise, err)
		}
		return fmt.Errorf("mesh: start gossip on %s: %w", net.JoinHostPort(host, strconv.Itoa(port)), err)
	}
	n.ml = ml
	local := ml.LocalNode()
	_, dport, _ := net.SplitHostPort(ln.Addr().String())
	n.dataAddr = net.JoinHostPort(local.Addr.String(), dport)
	n.catMu.Lock()
	n.local = nodeState{Node: n.id, Version: 1, Addr: n.dataAddr}
	n.states[n.id] = cloneState(&n.local)
	n.members[n.id] = Member{ID: n.id, Name: n.cfg.name, Addr: n.Addr(), DataAddr: n.dataAddr}
	n.rebuildLocked()
	n.catMu.Unlock()
	// Our data address travels in the node metadata too, so peers can dial
	// us before our catalogue state reaches them.
	return ml.UpdateNode(time.Second)
}

// createGossip starts memberlist on mc's address, with warren's bounded
// transport unless the configuration brings a transport of its own.
func (n *Node) createGossip(mc *memberlist.Config) (*memberlist.Memberlist, error) {
	own := mc.Transport == nil || n.ownTransport
	if own {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger,
		})
		if err != nil {
			return nil, err
		}
		mc.Transport = newBoundedTransport(nt, maxGossipStreams, n.log)
		n.ownTransport = true
	}
	ml, err := memberlist.Create(mc)
	if err != nil && own {
		mc.Transport.Shutdown()
	}
	return ml, err
}

func isAddrInUse(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// portFree reports whether host:port is free for both TCP and UDP.
func portFree(host string, port int) bool {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}

// testHookPortPicked, when set (by tests), runs after startGossip picked a
// free port and before it binds it.
var testHookPortPicked func(host string, port int)

// pickPort finds a port free for both TCP and UDP on host.
func pickPort(host string) (int, error) {
	var lastErr error
	for range 10 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
		lastErr = err
	}
	return 0, lastErr
}

// advertiseHost picks the IP to advertise, or "" to let memberlist choose.
func (n *Node) advertiseHost(bindHost string) (string, error) {
	if a := n.cfg.advertise; a != "" {
		h, _, err := splitHostPortDefault(a)
		if err != nil {
			return "", fmt.Errorf("%w: %s=%q: %v", ErrInvalidConfig, setting("advertise address", n.cfg.from.advertise), a, err)
		}
		if ip := net.ParseIP(h); ip != nil {
			return ip.String(), nil
		}
		ips, err := net.DefaultResolver.LookupHost(context.Background(), h)
		if err != nil || len(ips) == 0 {
			return "", fmt.Errorf("%w: %s=%q does not resolve: %v", ErrInvalidConfig, setting("advertise address", n.cfg.from.advertise), a, err)
		}
		return ips[0], nil
	}
	if ip := net.ParseIP(bindHost); ip != nil && !ip.IsUnspecified() {
		return ip.String(), nil
	}
	for _, name := range n.cfg.interfaces {
		if ip := interfaceIPv4(name); ip != "" {
			return ip, nil
		}
	}
	return "", nil
}

// ID returns the node's unique ID.
func (n *Node) ID() string { return n.id }

// Name returns the node's name as configured.
func (n *Node) Name() string { return n.cfg.name }

// Environment returns the node's environment.
func (n *Node) Environment() string { return n.cfg.env }

// Addr returns the gossip address another node can use as a seed.
func (n *Node) Addr() string {
	ln := n.ml.LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// DataAddr returns the address of the node's data-plane listener.
func (n *Node) DataAddr() string { return n.dataAddr }

// Logger returns the node's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// Members lists the live members of the mesh, this node included, sorted by ID.
func (n *Node) Members() []Member {
	n.catMu.Lock()
	out := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		out = append(out, m)
	}
	n.catMu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Catalogue returns every component known on live members, sorted by node
// and ID. The slice is the caller's.
func (n *Node) Catalogue() []Component {
	v := n.view.Load()
	out := make([]Component, len(v.Components))
	for i := range v.Components {
		out[i] = v.Components[i].clone()
	}
	return out
}

// View returns the current catalogue snapshot. It is immutable; wait on its
// Changed channel for the next one.
func (n *Node) View() *View { return n.view.Load() }

// Await blocks until cond holds for the catalogue, or ctx ends. It is the
// readiness call that ends start-up races ("wait until a validation service
// is visible").
func (n *Node) Await(ctx context.Context, cond func([]Component) bool) error {
	for {
		v := n.view.Load()
		if cond(v.Components) {
			return nil
		}
		select {
		case <-v.changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.done:
			return ErrClosed
		}
	}
}

func (n *Node) numMembers() int {
	if n.ml == nil {
		return 1
	}
	return n.ml.NumMembers()
}

// Close leaves the mesh gracefully and waits for every goroutine the node
// started. Components still registered are closed first. Close is
// idempotent; when ctx ends first it finishes abruptly and returns ctx's
// error.
func (n *Node) Close(ctx context.Context) error {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	if !n.closing.CompareAndSwap(false, true) {
		return n.closeErr
	}
	var errs []error
	// 1. Components go away from the catalogue and lose their peers.
	n.compMu.Lock()
	ports := make([]*Port, 0, len(n.comps))
	for _, p := range n.comps {
		ports = append(ports, p)
	}
	n.compMu.Unlock()
	for _, p := range ports {
		p.Close()
		if cn, ok := p.h.(nodeClosingNotifier); ok {
			cn.NodeClosing()
		}
	}
	n.publishLocal(func(st *nodeState) { st.Leaving = true })
	// 2. Announce leave, so peers drop us at once rather than by failure
	// detection; stop accepting data connections.
	leaveTimeout := time.Second
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*leaveTimeout {
		leaveTimeout = max(time.Until(dl)/2, 10*time.Millisecond)
	}
	if err := n.ml.Leave(leaveTimeout); err != nil {
		n.log.Debug("leave", "err", err)
	}
	n.ln.Close()
	// 3. Say goodbye on every connection and wait for the acknowledgements,
	// so nothing a peer already sent is lost in flight.
	n.goAwayAll(ctx)
	// 4. Stop everything.
	n.cancel()
	if err := n.ml.Shutdown(); err != nil {
		errs = append(errs, err)
	}
	n.closeAllConns()
	close(n.done)
	waited := make(chan struct{})
	go func() { n.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("mesh: close: %w", ctx.Err()))
		<-waited // every goroutine is bounded by n.ctx; they end promptly
	}
	n.closeErr = errors.Join(errs...)
	return n.closeErr
}

// startDiscovery runs the configured discoverers and the join loop.
func (n *Node) startDiscovery() {
	var ds []discovery.Discoverer
	if len(n.cfg.seeds) > 0 {
		d, err := discovery.ParseSeeds(strings.Join(n.cfg.seeds, ","))
		if err == nil && d != nil {
			ds = append(ds, d)
		}
	}
	if n.cfg.mdns {
		ds = append(ds, discovery.MDNS(discovery.WithInterfaces(n.cfg.interfaces...), discovery.WithLogger(n.log)))
	}
	if n.cfg.discovery != nil {
		ds = append(ds, n.cfg.discovery)
	}
	desc := "none"
	if len(ds) > 0 {
		d := discovery.Multi(ds...)
		desc = d.String()
		self := discovery.Self{NodeID: n.id, Addr: n.Addr(), Environment: n.cfg.env}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := d.Run(n.ctx, self, n.found); err != nil && n.ctx.Err() == nil {
				n.log.Warn("warren: discovery failed", "discovery", desc, "err", err)
			}
		}()
	}
	n.wg.Add(2)
	go n.joinLoop()
	go n.warnIfAlone(desc)
}

// found records addresses a discoverer reported.
func (n *Node) found(addrs []string) {
	self := n.Addr()
	now := time.Now()
	n.joinMu.Lock()
	added := false
	for _, a := range addrs {
		if a == self || a == "" {
			continue
		}
		if c, ok := n.candidates[a]; ok {
			c.seen = now
		} else {
			n.candidates[a] = &candidate{backoff: 250 * time.Millisecond, seen: now}
			added = true
		}
	}
	n.joinMu.Unlock()
	if added {
		select {
		case n.joinKick <- struct{}{}:
		default:
		}
	}
}

// joinLoop joins candidates that are not members yet, with per-address
// backoff, for the node's whole life (so a partitioned node rejoins). A
// candidate that is not a member and that discovery has not reported for
// cfg.candidateTTL is forgotten: discoverers re-report live addresses, so
// the addresses of nodes that left (pods replaced behind a DNS name, mDNS
// announcements gone) are not dialled forever.
func (n *Node) joinLoop() {
	defer n.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.joinKick:
		case <-t.C:
		}
		memberAddrs := map[string]bool{}
		for _, m := range n.Members() {
			memberAddrs[m.Addr] = true
		}
		now := time.Now()
		wait := 2 * time.Second
		n.joinMu.Lock()
		for addr, c := range n.candidates {
			if c.inFlight {
				continue
			}
			if memberAddrs[addr] {
				// Rejoin as soon as it stops being a member (a partition,
				// a restart), then back off: a wait set here would delay
				// the rejoin after a partition heals by up to joinMax.
				c.backoff = 250 * time.Millisecond
				c.next = time.Time{}
				c.seen = now
				continue
			}
			if now.Sub(c.seen) > n.cfg.candidateTTL {
				delete(n.candidates, addr)
				n.log.Debug("forgetting an address discovery no longer reports", "addr", addr)
				continue
			}
			if now.Before(c.next) {
				wait = min(wait, c.next.Sub(now))
				continue
			}
			c.inFlight = true
			n.wg.Add(1)
			go n.join(addr, c)
		}
		n.joinMu.Unlock()
		t.Reset(max(wait, 50*time.Millisecond))
	}
}

func (n *Node) join(addr string, c *candidate) {
	defer n.wg.Done()
	_, err := n.ml.Join([]string{addr})
	n.joinMu.Lock()
	c.inFlight = false
	if err != nil {
		n.log.Debug("join failed", "addr", addr, "err", err)
		c.next = time.Now().Add(c.backoff)
		c.backoff = min(2*c.backoff, n.cfg.joinMax)
	} else {
		c.backoff = 250 * time.Millisecond
		c.next = time.Now().Add(n.cfg.joinMax)
	}
	n.joinMu.Unlock()
	select {
	case n.joinKick <- struct{}{}:
	default:
	}
}

// warnIfAlone logs one actionable line when no peer shows up in time.
func (n *Node) warnIfAlone(desc string) {
	defer n.wg.Done()
	t := time.NewTimer(n.cfg.noPeerWarn)
	defer t.Stop()
	select {
	case <-n.ctx.Done():
		return
	case <-t.C:
	}
	if n.numMembers() > 1 {
		return
	}
	if desc == "none" {
		n.log.Warn(fmt.Sprintf("warren: no peers found after %s: discovery is off and no seeds are set; set %s=host:port,... (or a DNS name) so this node can find the others",
			n.cfg.noPeerWarn, EnvSeeds))
		return
	}
	n.log.Warn(fmt.Sprintf("warren: no peers found after %s (discovery: %s); if multicast is blocked here (Docker, Kubernetes, cloud networks), set %s=host:port,... or a DNS name such as a headless Service",
		n.cfg.noPeerWarn, desc, EnvSeeds))
}
