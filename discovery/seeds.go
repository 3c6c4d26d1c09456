package discovery

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
)

// ParseSeeds parses a WARREN_SEEDS-style value: comma- and/or
// space-separated entries, each "host:port", "host", "ip", "[ipv6]:port",
// "[ipv6]" or "dns:name[:port]" (a missing port means DefaultPort).
//
// IP literals are gathered into one Static discoverer. Names become DNS
// discoverers that are re-resolved (see DNS), so a Kubernetes headless
// service or a Docker Compose service name scaled to N replicas yields N
// peers; the "dns:" prefix is optional and only makes the intent explicit.
// opts are passed to every DNS discoverer (e.g. WithLogger).
//
// ParseSeeds returns a single Discoverer (a Multi when there are several),
// nil for a value without entries, or an error wrapping ErrInvalidSeed that
// names the first malformed entry (bad port, empty host, invalid name).
func ParseSeeds(s string, opts ...DNSOption) (Discoverer, error) {
	entries := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	var (
		ips     []string
		ds      []Discoverer
		seenDNS = map[string]bool{}
	)
	for _, e := range entries {
		host, port, isIP, err := parseSeed(e)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %v", ErrInvalidSeed, e, err)
		}
		if isIP {
			ips = append(ips, netip.AddrPortFrom(host.ip, uint16(port)).String())
			continue
		}
		key := host.name + ":" + strconv.Itoa(port)
		if seenDNS[key] {
			continue
		}
		seenDNS[key] = true
		ds = append(ds, DNS(host.name, port, opts...))
	}
	if len(ips) > 0 {
		ds = append([]Discoverer{Static(ips...)}, ds...)
	}
	if len(ds) == 0 {
		return nil, nil
	}
	return Multi(ds...), nil
}

type seedHost struct {
	ip   netip.Addr
	name string
}

// parseSeed parses one ParseSeeds entry.
func parseSeed(e string) (h seedHost, port int, isIP bool, err error) {
	rest, explicitDNS := cutPrefixFold(e, "dns:")
	host, portStr, err := splitSeed(rest)
	if err != nil {
		return h, 0, false, err
	}
	port = DefaultPort
	if portStr != "" {
		n, err := strconv.Atoi(portStr)
		if err != nil || n < 1 || n > 65535 {
			return h, 0, false, fmt.Errorf("bad port %q", portStr)
		}
		port = n
	}
	if host == "" {
		return h, 0, false, fmt.Errorf("empty host")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if z := ip.Zone(); z != "" && !validZone(z) {
			return h, 0, false, fmt.Errorf("invalid zone %q in %q (want an interface name or index)", z, host)
		}
		return seedHost{ip: ip}, port, true, nil
	}
	if strings.HasPrefix(rest, "[") {
		return h, 0, false, fmt.Errorf("%q is not an IPv6 address", host)
	}
	if err := validHostname(host); err != nil {
		if explicitDNS {
			return h, 0, false, err
		}
		return h, 0, false, fmt.Errorf("not an IP address or host name: %v", err)
	}
	return seedHost{name: host}, port, false, nil
}

// splitSeed splits "host:port", "host", "ip", "[ipv6]:port" or "[ipv6]"
// into host and (possibly empty) port. A bare IPv6 address has no port.
func splitSeed(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", fmt.Errorf("missing ']'")
		}
		host, rest := s[1:end], s[end+1:]
		switch {
		case rest == "":
			return host, "", nil
		case strings.HasPrefix(rest, ":") && len(rest) > 1:
			return host, rest[1:], nil
		default:
			return "", "", fmt.Errorf("bad port %q", strings.TrimPrefix(rest, ":"))
		}
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return s, "", nil // bare IPv4 or IPv6
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, "", nil
	case 1:
		host, port, _ := strings.Cut(s, ":")
		if port == "" {
			return "", "", fmt.Errorf("bad port %q", port)
		}
		return host, port, nil
	default:
		return "", "", fmt.Errorf("too many colons (write IPv6 addresses with a port as [addr]:port)")
	}
}

// validHostname checks a DNS name: dot-separated labels of letters, digits,
// '-' and '_' (Docker Compose names use '_'), at most 63 bytes each and 253
// in all; one trailing dot is allowed.
func validHostname(h string) error {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return fmt.Errorf("invalid host name %q", h)
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("invalid host name %q", h)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("invalid character %q in host name %q", c, h)
			}
		}
	}
	return nil
}

// validZone reports whether z can be an IPv6 zone: an interface name or
// index made of letters, digits, '.', '_', '-' and '@' (Linux interface
// names such as "eth0", "veth1@if4" or "br-0a1b"), at most 64 bytes.
// Anything else (a ']', a '%', a ':') could not be written back as
// "[addr%zone]:port" and parsed again.
func validZone(z string) bool {
	if len(z) > 64 {
		return false
	}
	for _, c := range []byte(z) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '@') {
			return false
		}
	}
	return true
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
