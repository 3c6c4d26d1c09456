package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// defaultDNSInterval is how often DNS re-resolves its name by default.
const defaultDNSInterval = 5 * time.Second

// minLookupTimeout bounds a single lookup from below; a lookup never outlives
// max(interval, minLookupTimeout).
const minLookupTimeout = 2 * time.Second

type dnsConfig struct {
	interval time.Duration
	lookup   func(ctx context.Context, host string) ([]string, error)
	log      *slog.Logger
}

// DNS returns a Discoverer that resolves name (all A and AAAA records) at
// start and then every interval (default 5 s, see WithInterval), reporting
// "ip:port" for each address. Re-resolving keeps up with a Kubernetes
// headless service or a Docker Compose service scaled to N replicas, whose
// name resolves to the addresses of all replicas.
//
// A port of 0 means DefaultPort. Lookup errors are logged at debug level and
// retried at the next interval; an empty name or a port out of range makes
// Run fail with ErrInvalidConfig.
func DNS(name string, port int, opts ...DNSOption) Discoverer {
	cfg := dnsConfig{interval: defaultDNSInterval, lookup: net.DefaultResolver.LookupHost}
	for _, o := range opts {
		if o != nil {
			o.applyDNS(&cfg)
		}
	}
	if port == 0 {
		port = DefaultPort
	}
	return &dnsDiscoverer{name: name, port: port, cfg: cfg}
}

type dnsDiscoverer struct {
	name string
	port int
	cfg  dnsConfig
}

func (d *dnsDiscoverer) String() string {
	return "dns " + net.JoinHostPort(d.name, strconv.Itoa(d.port))
}

func (d *dnsDiscoverer) Run(ctx context.Context, _ Self, found func(addrs []string)) error {
	log := d.cfg.log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("discovery", d.String())
	if d.name == "" {
		return fmt.Errorf("%w: dns: empty name", ErrInvalidConfig)
	}
	if d.port < 1 || d.port > 65535 {
		return fmt.Errorf("%w: dns %s: port %d out of range", ErrInvalidConfig, d.name, d.port)
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if addrs := d.resolve(ctx, log); len(addrs) > 0 && ctx.Err() == nil {
			found(addrs)
		}
		t.Reset(d.cfg.interval)
	}
}

// resolve looks the name up once and returns the sorted, de-duplicated
// "ip:port" addresses (nil on error).
func (d *dnsDiscoverer) resolve(ctx context.Context, log *slog.Logger) []string {
	lctx, cancel := context.WithTimeout(ctx, max(d.cfg.interval, minLookupTimeout))
	defer cancel()
	hosts, err := d.cfg.lookup(lctx, d.name)
	if err != nil {
		if ctx.Err() == nil {
			log.Debug("warren discovery: dns lookup failed; will retry", "name", d.name, "err", err)
		}
		return nil
	}
	addrs := make([]string, 0, len(hosts))
	for _, h := range hosts {
		ip, err := netip.ParseAddr(h)
		if err != nil {
			log.Debug("warren discovery: dns lookup returned a non-IP; ignored", "name", d.name, "value", h)
			continue
		}
		addrs = append(addrs, net.JoinHostPort(ip.String(), strconv.Itoa(d.port)))
	}
	if len(addrs) == 0 {
		log.Debug("warren discovery: dns name has no addresses yet", "name", d.name)
		return nil
	}
	slices.Sort(addrs)
	return slices.Compact(addrs)
}
