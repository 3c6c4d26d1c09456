package mesh

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/warrenmesh/warren/discovery"
	"github.com/warrenmesh/warren/internal/wire"
)

// DefaultPort is the gossip port a node binds when it can, and the port a
// seed without one is assumed to use.
const DefaultPort = discovery.DefaultPort

// Environment variables read by New (explicit options win over them).
const (
	EnvName       = "WARREN_NAME"       // node name (default: host name)
	EnvEnv        = "WARREN_ENV"        // environment: only components of the same environment talk
	EnvSeeds      = "WARREN_SEEDS"      // comma-separated host:port, host, or DNS names
	EnvDiscovery  = "WARREN_DISCOVERY"  // "mdns" (default) or "none" (seeds only)
	EnvInterfaces = "WARREN_INTERFACES" // comma-separated interfaces for mDNS and the advertised address
	EnvBind       = "WARREN_BIND"       // gossip bind address host:port
	EnvAdvertise  = "WARREN_ADVERTISE"  // address peers use to reach this node: host or host:port
	EnvLog        = "WARREN_LOG"        // debug, info, warn (default), error or off
	EnvMaxFrame   = "WARREN_MAX_FRAME"  // largest frame in bytes
)

// Option configures a Node. Options are applied after the WARREN_*
// environment variables, so an explicit option always wins.
type Option func(*config)

type config struct {
	name       string
	env        string
	bind       string
	bindIsDef  bool // bind came from the default, so a busy DefaultPort may fall back to 0
	bindSet    bool // bind was given by an option or WARREN_BIND
	advertise  string
	seeds      []string
	mdns       bool
	mdnsSet    bool
	interfaces []string
	logger     *slog.Logger
	logLevel   slog.Level
	logOff     bool
	maxFrame   int
	discovery  discovery.Discoverer
	gossip     func(*memberlist.Config)
	noPeerWarn time.Duration
	joinMax    time.Duration
	// candidateTTL is how long a discovered address that is not a member
	// stays a join candidate after discovery last reported it.
	candidateTTL time.Duration
	// from names the variable a setting came from, for error messages ("" when
	// it came from an option or the default).
	from struct{ name, advertise, maxFrame string }
}

// setting names a setting in an error message: the variable it came from,
// when it did, else its plain name.
func setting(label, fromVar string) string {
	if fromVar != "" {
		return fromVar
	}
	return label
}

func defaults() config {
	host, _ := os.Hostname()
	c := config{
		name:       sanitizeName(host),
		bind:       net.JoinHostPort("0.0.0.0", strconv.Itoa(DefaultPort)),
		bindIsDef:  true,
		mdns:       true,
		logLevel:   slog.LevelWarn,
		maxFrame:   wire.DefaultMaxFrame,
		noPeerWarn: 5 * time.Second,
		joinMax:    10 * time.Second,
		// Far longer than any discoverer's re-report interval (Static: 30 s,
		// DNS: 5 s by default, mDNS: 10 s), so only addresses discovery has
		// stopped reporting (a pod gone from a headless Service) expire.
		candidateTTL: 10 * time.Minute,
	}
	if testing.Testing() {
		// Test binaries must never gossip or multicast beyond loopback by
		// accident: bind loopback on a free port, and mDNS stays off unless
		// interfaces are named (see New).
		c.bind = "127.0.0.1:0"
		c.bindIsDef = false
		c.mdns = false
	}
	return c
}

// WithName sets the node's name (default: the host name). The node's unique
// ID is the name plus a random suffix, so many nodes may share a name.
func WithName(name string) Option { return func(c *config) { c.name, c.from.name = name, "" } }

// WithEnvironment sets the environment. Components only see components of
// the same environment, so one LAN can host "dev" and "staging" apart.
func WithEnvironment(env string) Option { return func(c *config) { c.env = env } }

// WithBindAddr sets the gossip bind address, "host:port". Port 0 picks a free
// port. The default is 0.0.0.0:7946, falling back to a free port when 7946 is
// taken by another node on this host.
func WithBindAddr(addr string) Option {
	return func(c *config) { c.bind, c.bindIsDef, c.bindSet = addr, false, true }
}

// WithAdvertiseAddr sets the address ("host" or "host:port") peers use to
// reach this node, for NAT, containers or multi-homed hosts. By default it is
// the bind address, or the first address of the first configured interface,
// or the host's private address.
func WithAdvertiseAddr(addr string) Option {
	return func(c *config) { c.advertise, c.from.advertise = addr, "" }
}

// WithSeeds adds seed addresses ("host:port", "host", or a DNS name that
// resolves to several peers, as a Kubernetes headless Service does). Seeds
// work where multicast is blocked; they are joined, and re-joined, in the
// background.
func WithSeeds(seeds ...string) Option {
	return func(c *config) { c.seeds = append(append([]string(nil), c.seeds...), seeds...) }
}

// WithMDNS turns multicast DNS discovery on or off (default on, except in
// test binaries where it is on only when interfaces are named).
func WithMDNS(on bool) Option { return func(c *config) { c.mdns = on; c.mdnsSet = true } }

// WithInterfaces restricts mDNS to the named network interfaces and picks
// the advertised address from the first of them.
func WithInterfaces(names ...string) Option {
	return func(c *config) { c.interfaces = append([]string(nil), names...) }
}

// WithLogger sets the logger (default: text to stderr at the WARREN_LOG
// level, warn when unset). The library is quiet by default.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithMaxFrame sets the largest data-plane frame in bytes (default 16 MiB).
// Messages that do not fit are refused with an error.
func WithMaxFrame(n int) Option { return func(c *config) { c.maxFrame, c.from.maxFrame = n, "" } }

// WithDiscovery adds a custom discoverer, run alongside seeds and mDNS.
func WithDiscovery(d discovery.Discoverer) Option { return func(c *config) { c.discovery = d } }

// WithGossipConfig lets advanced users tune the memberlist configuration
// (timers, encryption via SecretKey, ...) after warren has filled it in.
// Warren's delegates, name and addresses must be left alone.
func WithGossipConfig(fn func(*memberlist.Config)) Option { return func(c *config) { c.gossip = fn } }

// applyEnv overlays WARREN_* variables onto c.
func (c *config) applyEnv(getenv func(string) string) error {
	if v := getenv(EnvName); v != "" {
		c.name, c.from.name = v, EnvName
	}
	if v := getenv(EnvEnv); v != "" {
		c.env = v
	}
	if v := getenv(EnvBind); v != "" {
		if _, _, err := splitHostPortDefault(v); err != nil {
			return fmt.Errorf("%w: %s=%q: %v", ErrInvalidConfig, EnvBind, v, err)
		}
		c.bind, c.bindIsDef, c.bindSet = v, false, true
	}
	if v := getenv(EnvAdvertise); v != "" {
		c.advertise, c.from.advertise = v, EnvAdvertise
	}
	if v := getenv(EnvSeeds); v != "" {
		if _, err := discovery.ParseSeeds(v); err != nil {
			return fmt.Errorf("%w: %s=%q: %v", ErrInvalidConfig, EnvSeeds, v, err)
		}
		c.seeds = splitList(v)
	}
	if v := getenv(EnvInterfaces); v != "" {
		c.interfaces = splitList(v)
		for _, name := range c.interfaces {
			if _, err := net.InterfaceByName(name); err != nil {
				return fmt.Errorf("%w: %s=%q: no interface %q", ErrInvalidConfig, EnvInterfaces, v, name)
			}
		}
	}
	if v := getenv(EnvDiscovery); v != "" {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "mdns":
			c.mdns, c.mdnsSet = true, true
		case "none", "seeds", "off":
			c.mdns, c.mdnsSet = false, true
		default:
			return fmt.Errorf("%w: %s=%q: want mdns or none", ErrInvalidConfig, EnvDiscovery, v)
		}
	}
	if v := getenv(EnvLog); v != "" {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "debug":
			c.logLevel = slog.LevelDebug
		case "info":
			c.logLevel = slog.LevelInfo
		case "warn", "warning":
			c.logLevel = slog.LevelWarn
		case "error":
			c.logLevel = slog.LevelError
		case "off", "none":
			c.logOff = true
		default:
			return fmt.Errorf("%w: %s=%q: want debug, info, warn, error or off", ErrInvalidConfig, EnvLog, v)
		}
	}
	if v := getenv(EnvMaxFrame); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%w: %s=%q: not a number of bytes", ErrInvalidConfig, EnvMaxFrame, v)
		}
		c.maxFrame, c.from.maxFrame = n, EnvMaxFrame
	}
	return nil
}

// validate checks the final configuration once.
func (c *config) validate() error {
	if c.name == "" {
		c.name = "node"
	}
	if err := validName(c.name); err != nil {
		return fmt.Errorf("%w: %s=%q: %v", ErrInvalidConfig, setting("name", c.from.name), c.name, err)
	}
	if _, _, err := splitHostPortDefault(c.bind); err != nil {
		return fmt.Errorf("%w: bind address %q: %v", ErrInvalidConfig, c.bind, err)
	}
	if c.maxFrame < wire.MinMaxFrame {
		return fmt.Errorf("%w: %s=%d is below %d bytes", ErrInvalidConfig, setting("max frame", c.from.maxFrame), c.maxFrame, wire.MinMaxFrame)
	}
	if len(c.seeds) > 0 {
		if _, err := discovery.ParseSeeds(strings.Join(c.seeds, ",")); err != nil {
			return fmt.Errorf("%w: seeds: %v", ErrInvalidConfig, err)
		}
	}
	for _, name := range c.interfaces {
		if _, err := net.InterfaceByName(name); err != nil {
			return fmt.Errorf("%w: interface %q: %v", ErrInvalidConfig, name, err)
		}
	}
	if testing.Testing() {
		switch {
		case len(c.interfaces) == 0 && c.mdns:
			if c.mdnsSet {
				return fmt.Errorf("%w: mDNS in a test binary needs explicit interfaces (WithInterfaces), so it never multicasts on the host's real network", ErrInvalidConfig)
			}
			c.mdns = false
		case len(c.interfaces) > 0:
			// Named interfaces (a test's own network namespace): discover
			// there, as a real process would, bound to the interface.
			if !c.mdnsSet {
				c.mdns = true
			}
			if !c.bindSet {
				if ip := interfaceIPv4(c.interfaces[0]); ip != "" {
					c.bind = net.JoinHostPort(ip, "0")
				}
			}
		}
	}
	return nil
}

// interfaceIPv4 returns the first IPv4 address of the named interface.
func interfaceIPv4(name string) string {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return ""
	}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	return ""
}

func splitList(v string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// splitHostPortDefault splits "host:port", "host" or "[v6]:port".
func splitHostPortDefault(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return strings.Trim(addr, "[]"), DefaultPort, nil
		}
		return "", 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", portStr)
	}
	return host, port, nil
}

func sanitizeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-.")
	if len(out) > 48 {
		out = out[:48]
	}
	return out
}

func validName(s string) error {
	if len(s) > 64 {
		return fmt.Errorf("longer than 64 bytes")
	}
	if sanitizeName(s) != s {
		return fmt.Errorf("use letters, digits, '-', '_' and '.'")
	}
	return nil
}
