package discovery

import (
	"context"
	"log/slog"
	"time"
)

// MDNSOption configures MDNS.
type MDNSOption interface{ applyMDNS(*mdnsConfig) }

// DNSOption configures DNS (and the DNS discoverers ParseSeeds creates).
type DNSOption interface{ applyDNS(*dnsConfig) }

// Option configures both MDNS and DNS; WithLogger is one.
type Option interface {
	MDNSOption
	DNSOption
}

type mdnsOptionFunc func(*mdnsConfig)

func (f mdnsOptionFunc) applyMDNS(c *mdnsConfig) { f(c) }

type dnsOptionFunc func(*dnsConfig)

func (f dnsOptionFunc) applyDNS(c *dnsConfig) { f(c) }

type loggerOption struct{ l *slog.Logger }

func (o loggerOption) applyMDNS(c *mdnsConfig) {
	if o.l != nil {
		c.log = o.l
	}
}

func (o loggerOption) applyDNS(c *dnsConfig) {
	if o.l != nil {
		c.log = o.l
	}
}

// WithLogger sets the logger of MDNS or DNS (default slog.Default()). A nil
// logger keeps the default.
func WithLogger(l *slog.Logger) Option { return loggerOption{l} }

// WithInterfaces restricts mDNS announcing and browsing to the named
// interfaces. Without it (or with no names) every up, multicast-capable,
// non-loopback interface is used. An unknown name makes Run fail with
// ErrInterface.
func WithInterfaces(names ...string) MDNSOption {
	names = append([]string(nil), names...)
	return mdnsOptionFunc(func(c *mdnsConfig) { c.ifaces = names })
}

// WithService sets the DNS-SD service type (default "_warren._tcp"). An empty
// name keeps the default.
func WithService(name string) MDNSOption {
	return mdnsOptionFunc(func(c *mdnsConfig) {
		if name != "" {
			c.service = name
		}
	})
}

// WithDomain sets the mDNS domain (default "local."). An empty domain keeps
// the default.
func WithDomain(d string) MDNSOption {
	return mdnsOptionFunc(func(c *mdnsConfig) {
		if d != "" {
			c.domain = d
		}
	})
}

// WithBrowseInterval sets a fixed interval between mDNS queries. By default
// MDNS queries every 2 s for the first 10 s (fast first contact) and every
// 10 s afterwards (low steady traffic). Values below 100 ms are raised to
// 100 ms and values above 5 minutes lowered to 5 minutes; d <= 0 keeps the
// default schedule.
func WithBrowseInterval(d time.Duration) MDNSOption {
	return mdnsOptionFunc(func(c *mdnsConfig) {
		switch {
		case d <= 0:
			c.browse = 0
		case d < minBrowseInterval:
			c.browse = minBrowseInterval
		case d > maxReportInterval:
			c.browse = maxReportInterval
		default:
			c.browse = d
		}
	})
}

// WithInterval sets how often DNS re-resolves its name (default 5 s);
// d <= 0 keeps the default, and values above 5 minutes are lowered to 5
// minutes (addresses must be re-reported for a mesh node to keep them:
// see Discoverer).
func WithInterval(d time.Duration) DNSOption {
	return dnsOptionFunc(func(c *dnsConfig) {
		if d > 0 {
			c.interval = min(d, maxReportInterval)
		}
	})
}

// WithResolver replaces the DNS lookup function (default
// net.DefaultResolver.LookupHost), mainly for tests. It must return IP
// addresses; other strings are ignored. A nil function keeps the default.
func WithResolver(lookup func(ctx context.Context, host string) ([]string, error)) DNSOption {
	return dnsOptionFunc(func(c *dnsConfig) {
		if lookup != nil {
			c.lookup = lookup
		}
	})
}
