package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/grandcat/zeroconf"
)

const (
	defaultService = "_warren._tcp"
	defaultDomain  = "local."

	// Default browse schedule: fast first contact, then low steady traffic.
	fastBrowseInterval = 2 * time.Second
	fastBrowsePeriod   = 10 * time.Second
	slowBrowseInterval = 10 * time.Second
	minBrowseInterval  = 100 * time.Millisecond

	// minServerLife keeps a zeroconf server alive at least this long before
	// Shutdown: zeroconf v1.0.0's receive goroutines call WaitGroup.Add from
	// inside themselves, so a Shutdown racing with their start could make
	// the WaitGroup panic ("Add called concurrently with Wait").
	minServerLife = 100 * time.Millisecond

	// txtVersion is the version of the TXT record layout.
	txtVersion = "1"
)

type mdnsConfig struct {
	ifaces  []string
	service string
	domain  string
	browse  time.Duration // 0: default schedule
	log     *slog.Logger
}

// MDNS returns a Discoverer that announces the local node with multicast DNS
// (DNS-SD service "_warren._tcp" in "local." by default) and browses for the
// other nodes on the same link, reporting each one's gossip address.
//
// The announcement advertises exactly Self.Addr (with an unspecified IP such
// as 0.0.0.0 replaced by the first IPv4 address of the interfaces) and the
// TXT records "id=<NodeID>", "env=<Environment>" and "v=1". Peers announcing
// a different non-empty environment are not reported, nor is the node itself.
//
// Only use MDNS on a LAN that carries multicast; in Docker, Kubernetes and
// most clouds use seeds or a DNS name instead (see ParseSeeds).
func MDNS(opts ...MDNSOption) Discoverer {
	cfg := mdnsConfig{service: defaultService, domain: defaultDomain}
	for _, o := range opts {
		if o != nil {
			o.applyMDNS(&cfg)
		}
	}
	return &mdnsDiscoverer{cfg: cfg}
}

type mdnsDiscoverer struct {
	cfg mdnsConfig
}

func (m *mdnsDiscoverer) String() string {
	if len(m.cfg.ifaces) == 0 {
		return "mdns on all interfaces"
	}
	return "mdns on " + strings.Join(m.cfg.ifaces, ",")
}

func (m *mdnsDiscoverer) Run(ctx context.Context, self Self, found func(addrs []string)) error {
	if ctx.Err() != nil {
		return nil
	}
	log := m.cfg.log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("discovery", m.String())
	err := m.run(ctx, log, self, found)
	if err != nil {
		// Logged here too because Multi keeps the other discoverers running.
		log.Warn("warren discovery: mdns disabled", "err", err)
	}
	return err
}

func (m *mdnsDiscoverer) run(ctx context.Context, log *slog.Logger, self Self, found func(addrs []string)) error {
	service := trimDot(m.cfg.service)
	domain := trimDot(m.cfg.domain)
	if err := validService(service); err != nil {
		return err
	}
	if err := validHostname(domain); err != nil {
		return fmt.Errorf("%w: mdns domain: %v", ErrInvalidConfig, err)
	}
	if self.NodeID == "" {
		return fmt.Errorf("%w: empty NodeID", ErrInvalidSelf)
	}
	ifaces, err := m.interfaces()
	if err != nil {
		return err
	}
	ifAddrs := interfaceAddrs(ifaces)
	adv, err := advertisedAddr(self.Addr, ifAddrs)
	if err != nil {
		return err
	}
	names := newMDNSNames(self.NodeID)
	txt := []string{
		encodeTXT(txtKeyID, self.NodeID),
		encodeTXT(txtKeyEnv, self.Environment),
		encodeTXT(txtKeyVersion, txtVersion),
	}
	host := names.host + "." + domain + "."
	// The domain is passed without its trailing dot: RegisterProxy appends
	// the domain to the host name again unless the host ends with it
	// verbatim ("n.local" does not end with "local.").
	server, err := zeroconf.RegisterProxy(names.instance, service, domain, int(adv.Port()), host,
		[]string{adv.Addr().WithZone("").String()}, txt, ifaces)
	if err != nil {
		return fmt.Errorf("%w: register: %w", ErrMDNS, err)
	}
	registered := time.Now()
	defer func() {
		if d := minServerLife - time.Since(registered); d > 0 {
			time.Sleep(d)
		}
		server.Shutdown() // sends goodbye packets, closes sockets, waits for its readers
	}()
	log.Debug("warren discovery: mdns announcing", "instance", names.instance, "addr", adv.String())
	if adv.Addr().IsLoopback() {
		log.Warn("warren discovery: mdns is announcing a loopback address; peers on other hosts cannot reach it", "addr", adv.String())
	}

	b := &browser{
		service: service,
		domain:  domain,
		ifaces:  ifaces,
		ipType:  ipTraffic(ifAddrs),
		fixed:   m.cfg.browse,
		log:     log,
		found:   found,
		self: selfMatch{
			instance: names.instance,
			id:       truncateTXT(txtKeyID, self.NodeID),
			addr:     adv.String(),
			env:      truncateTXT(txtKeyEnv, self.Environment),
		},
	}
	if len(ifaces) == 1 {
		b.zone = ifaces[0].Name
	}
	return b.loop(ctx)
}

// interfaces returns the configured interfaces, or every up, multicast,
// non-loopback interface when none is configured.
func (m *mdnsDiscoverer) interfaces() ([]net.Interface, error) {
	if len(m.cfg.ifaces) > 0 {
		out := make([]net.Interface, 0, len(m.cfg.ifaces))
		for _, name := range m.cfg.ifaces {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: %v", ErrInterface, name, err)
			}
			if ifi.Flags&net.FlagMulticast == 0 {
				return nil, fmt.Errorf("%w: %q does not support multicast", ErrInterface, name)
			}
			out = append(out, *ifi)
		}
		return out, nil
	}
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInterface, err)
	}
	var out []net.Interface
	for _, ifi := range all {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 && ifi.Flags&net.FlagLoopback == 0 {
			out = append(out, ifi)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no up multicast interface", ErrInterface)
	}
	return out, nil
}

// interfaceAddrs lists the unicast addresses of ifaces, in order.
func interfaceAddrs(ifaces []net.Interface) []netip.Addr {
	var out []netip.Addr
	for _, ifi := range ifaces {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.Is6() && ip.IsLinkLocalUnicast() {
				ip = ip.WithZone(ifi.Name)
			}
			out = append(out, ip)
		}
	}
	return out
}

// advertisedAddr parses self.Addr ("ip:port"); an unspecified IP is replaced
// by the first usable IPv4 address in candidates (else the first IPv6 one).
func advertisedAddr(addr string, candidates []netip.Addr) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: addr %q: %v", ErrInvalidSelf, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("%w: addr %q: bad port", ErrInvalidSelf, addr)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: addr %q: mdns needs an IP address, not a name", ErrInvalidSelf, addr)
	}
	ip = ip.Unmap()
	if !ip.IsUnspecified() {
		return netip.AddrPortFrom(ip, uint16(port)), nil
	}
	var v6 netip.Addr
	for _, c := range candidates {
		if c.IsLoopback() || c.IsUnspecified() || c.IsMulticast() {
			continue
		}
		if c.Is4() {
			return netip.AddrPortFrom(c, uint16(port)), nil
		}
		if !v6.IsValid() {
			v6 = c
		}
	}
	if v6.IsValid() {
		return netip.AddrPortFrom(v6, uint16(port)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("%w: addr %q is unspecified and the interfaces have no address", ErrInterface, addr)
}

// ipTraffic chooses the IP families to browse on: both unless the interfaces
// lack one family entirely (IPv6 disabled, as in many containers). This
// matters because zeroconf's resolver fails outright when one family cannot
// join its group.
func ipTraffic(addrs []netip.Addr) zeroconf.IPType {
	var t zeroconf.IPType
	for _, a := range addrs {
		if a.Is4() {
			t |= zeroconf.IPv4
		} else {
			t |= zeroconf.IPv6
		}
	}
	if t == 0 {
		return zeroconf.IPv4AndIPv6
	}
	return t
}

func validService(s string) error {
	name, proto, ok := strings.Cut(s, ".")
	if !ok || len(name) < 2 || name[0] != '_' || (proto != "_tcp" && proto != "_udp") || validHostname(name[1:]) != nil {
		return fmt.Errorf("%w: mdns service %q: want \"_name._tcp\" or \"_name._udp\"", ErrInvalidConfig, s)
	}
	return nil
}

// browser runs successive browse rounds.
type browser struct {
	service, domain string
	ifaces          []net.Interface
	ipType          zeroconf.IPType
	zone            string        // zone for link-local IPv6 peers; "" if ambiguous
	fixed           time.Duration // 0: default schedule
	log             *slog.Logger
	found           func([]string)
	self            selfMatch
	seen            map[string]bool // addresses already logged
}

func (b *browser) interval(elapsed time.Duration) time.Duration {
	if b.fixed > 0 {
		return b.fixed
	}
	if elapsed < fastBrowsePeriod {
		return fastBrowseInterval
	}
	return slowBrowseInterval
}

// loop browses in rounds of one interval each. zeroconf v1.0.0 stops
// re-querying once a Browse has found one entry, and its resolver closes its
// sockets when the Browse context ends, so every round uses a new resolver
// and a new Browse with its own context.
func (b *browser) loop(ctx context.Context) error {
	start := time.Now()
	for round := 0; ; round++ {
		if ctx.Err() != nil {
			return nil
		}
		interval := b.interval(time.Since(start))
		err := b.round(ctx, interval)
		if err == nil {
			continue
		}
		if round == 0 {
			return err
		}
		b.log.Warn("warren discovery: mdns browse failed; retrying", "err", err)
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// round browses for one interval. It returns only after zeroconf has closed
// the entries channel, i.e. after its main loop has finished.
func (b *browser) round(ctx context.Context, interval time.Duration) error {
	res, err := b.newResolver()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, interval)
	defer cancel()
	entries := make(chan *zeroconf.ServiceEntry, 16)
	if err := res.Browse(rctx, b.service, b.domain, entries); err != nil {
		cancel()
		for range entries { // zeroconf closes it when its main loop ends
		}
		return fmt.Errorf("%w: browse: %w", ErrMDNS, err)
	}
	// Entries must be drained until closed: zeroconf's main loop blocks on
	// sending and would otherwise never notice the end of rctx.
	for e := range entries {
		if addr, ok := b.accept(e); ok {
			b.found([]string{addr})
		}
	}
	return nil
}

// newResolver creates a resolver for the chosen IP families, falling back to
// a single family if joining both fails (the working choice is kept).
func (b *browser) newResolver() (*zeroconf.Resolver, error) {
	tries := []zeroconf.IPType{b.ipType}
	if b.ipType == zeroconf.IPv4AndIPv6 {
		tries = append(tries, zeroconf.IPv4, zeroconf.IPv6)
	}
	var errs []error
	for _, t := range tries {
		res, err := zeroconf.NewResolver(zeroconf.SelectIfaces(b.ifaces), zeroconf.SelectIPTraffic(t))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if t != b.ipType {
			b.log.Debug("warren discovery: mdns browsing on one IP family only", "err", errors.Join(errs...))
			b.ipType = t
		}
		return res, nil
	}
	return nil, fmt.Errorf("%w: resolver: %w", ErrMDNS, errors.Join(errs...))
}

// accept filters an entry and returns the address to report.
func (b *browser) accept(e *zeroconf.ServiceEntry) (string, bool) {
	if e == nil {
		return "", false
	}
	if b.self.isSelf(e) {
		return "", false
	}
	if env, ok := txtValue(e.Text, txtKeyEnv); ok && env != "" && b.self.env != "" && env != b.self.env {
		b.log.Debug("warren discovery: mdns peer in another environment; ignored", "instance", unescapeDNS(e.Instance), "env", env)
		return "", false
	}
	addr, ok := entryAddr(e, b.zone)
	if !ok {
		b.log.Debug("warren discovery: mdns entry without a usable address; ignored", "instance", unescapeDNS(e.Instance))
		return "", false
	}
	if addr == b.self.addr {
		return "", false
	}
	if !b.seen[addr] {
		if b.seen == nil {
			b.seen = make(map[string]bool)
		}
		b.seen[addr] = true
		b.log.Debug("warren discovery: mdns found peer", "instance", unescapeDNS(e.Instance), "addr", addr)
	}
	return addr, true
}

// entryAddr returns the entry's first IPv4 address (else its first IPv6
// one) joined with its port. A link-local IPv6 address needs zone; without
// one it is unusable.
func entryAddr(e *zeroconf.ServiceEntry, zone string) (string, bool) {
	if e.Port < 1 || e.Port > 65535 {
		return "", false
	}
	port := strconv.Itoa(e.Port)
	for _, ip := range e.AddrIPv4 {
		if v4 := ip.To4(); v4 != nil && !v4.IsUnspecified() {
			return net.JoinHostPort(v4.String(), port), true
		}
	}
	for _, ip := range e.AddrIPv6 {
		a, ok := netip.AddrFromSlice(ip)
		if !ok || a.IsUnspecified() {
			continue
		}
		if a.IsLinkLocalUnicast() {
			if zone == "" {
				continue
			}
			a = a.WithZone(zone)
		}
		return net.JoinHostPort(a.String(), port), true
	}
	return "", false
}
