package discovery

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/grandcat/zeroconf"
)

// Fuzz targets for the parsers of discovery input: seed lists (from
// WARREN_SEEDS, often written by hand or templated) and mDNS announcements
// (instance names, TXT records, addresses and ports as zeroconf hands them
// over from any host on the link). Seed corpora are in testdata/fuzz/.

// flatten lists the discoverers inside d.
func flatten(d Discoverer) []Discoverer {
	if m, ok := d.(multi); ok {
		var out []Discoverer
		for _, x := range m {
			out = append(out, flatten(x)...)
		}
		return out
	}
	return []Discoverer{d}
}

func FuzzParseSeeds(f *testing.F) {
	for _, s := range []string{
		"", " ,, ", "10.0.0.1", "10.0.0.1:7000,10.0.0.2 10.0.0.3:1", "[fd00::1]:7000", "fd00::1",
		"[fe80::1%eth0]:7000", "validation-service", "dns:validation-service:7001",
		"DNS:peers.default.svc.cluster.local.:7001", "myproj_web_1", "svc:1 svc:2",
		"10.0.0.1:99999", "10.0.0.1:0", "dns:", "dns::7946", "[::1", "[::1]x", "a:b:c", "a..b", "-:1",
		"\x00", "héllo", "[1.2.3.4]:5", "dns:[fd00::1]", "10.0.0.1:+7", "10.0.0.1:07946",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseSeeds(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidSeed) || d != nil {
				t.Fatalf("ParseSeeds(%q) = %v, %v: want a nil Discoverer and ErrInvalidSeed", s, d, err)
			}
			return
		}
		entries := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
		if (d == nil) != (len(entries) == 0) {
			t.Fatalf("ParseSeeds(%q) = %v for %d entries", s, d, len(entries))
		}
		if d == nil {
			return
		}
		// Every seed is a usable address or name; together, written out
		// again, they parse to the same thing.
		var canon []string
		for _, x := range flatten(d) {
			switch x := x.(type) {
			case *static:
				for _, a := range x.addrs {
					ap, err := netip.ParseAddrPort(a)
					if err != nil || ap.Port() == 0 {
						t.Fatalf("ParseSeeds(%q): static seed %q: %v", s, a, err)
					}
					canon = append(canon, a)
				}
			case *dnsDiscoverer:
				if err := validHostname(x.name); err != nil || x.port < 1 || x.port > 65535 {
					t.Fatalf("ParseSeeds(%q): DNS seed %q port %d: %v", s, x.name, x.port, err)
				}
				canon = append(canon, "dns:"+x.name+":"+strconv.Itoa(x.port))
			default:
				t.Fatalf("ParseSeeds(%q): unexpected %T", s, x)
			}
		}
		again, err := ParseSeeds(strings.Join(canon, ","))
		if err != nil || again.String() != d.String() {
			t.Fatalf("ParseSeeds(%q) = %s; written out as %q it parses to %v, %v", s, d, canon, again, err)
		}
	})
}

// fuzzBrowser is the browser of a node named "me-node" at 10.0.0.1:7946 in
// environment prod.
func fuzzBrowser(zone string) *browser {
	return &browser{
		zone:  zone,
		log:   slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug})),
		found: func([]string) {},
		self: selfMatch{instance: newMDNSNames("me-node").instance, id: truncateTXT(txtKeyID, "me-node"),
			addr: "10.0.0.1:7946", env: truncateTXT(txtKeyEnv, "prod")},
	}
}

// FuzzMDNSEntry feeds announcements as zeroconf decodes them from the
// network to the browser's filter: an instance name, TXT strings (split on
// NUL), a port, and address bytes (split into 4- and 16-byte addresses).
func FuzzMDNSEntry(f *testing.F) {
	f.Add("peer", "id=peer\x00env=prod\x00v=1", 7946, []byte{10, 0, 0, 2}, []byte(nil), "")
	f.Add("me-node", "id=x", 7946, []byte{10, 0, 0, 9}, []byte(nil), "")
	f.Add("renamed", "id=me-node", 7946, []byte{10, 0, 0, 9}, []byte(nil), "")
	f.Add("peer", "env=staging", 7946, []byte{10, 0, 0, 2}, []byte(nil), "")
	f.Add(`a\.b\\c\032d`, `id=\105\100\\x\000`, 1, []byte(nil), []byte(net.ParseIP("fe80::1").To16()), "eth0")
	f.Add("peer", "", 70000, []byte{0, 0, 0, 0, 10, 0, 0, 1}, []byte(nil), "")
	f.Add("peer", "env=\\", -1, []byte(nil), []byte(net.ParseIP("::ffff:10.0.0.3").To16()), "")
	f.Fuzz(func(t *testing.T, instance, txt string, port int, v4 []byte, v6 []byte, zone string) {
		e := zeroconf.NewServiceEntry(instance, "_warren._tcp", "local.")
		e.Port = port
		if txt != "" {
			e.Text = strings.Split(txt, "\x00")
		}
		for ; len(v4) >= 4; v4 = v4[4:] {
			e.AddrIPv4 = append(e.AddrIPv4, net.IP(v4[:4]))
		}
		for ; len(v6) >= 16; v6 = v6[16:] {
			e.AddrIPv6 = append(e.AddrIPv6, net.IP(v6[:16]))
		}
		if zone != "" {
			zone = "eth0" // the zone comes from configuration, not the network
		}
		b := fuzzBrowser(zone)
		addr, ok := b.accept(e)
		if !ok {
			if addr != "" {
				t.Fatalf("refused entry with address %q", addr)
			}
			return
		}
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || int(ap.Port()) != port || ap.Addr().IsUnspecified() || addr == b.self.addr {
			t.Fatalf("accepted %q for port %d: %v", addr, port, err)
		}
		if ap.Addr().Is6() && ap.Addr().IsLinkLocalUnicast() && ap.Addr().Zone() != zone {
			t.Fatalf("link-local %q without the zone %q", addr, zone)
		}
		if b.self.isSelf(e) {
			t.Fatal("accepted our own announcement")
		}
		if env, ok := txtValue(e.Text, txtKeyEnv); ok && env != "" && env != b.self.env {
			t.Fatalf("accepted a peer of environment %q", env)
		}
	})
}

// FuzzTXT checks the TXT escaping: what encodeTXT writes, txtValue reads
// back (truncated to 255 bytes at a rune boundary), for any key and value;
// and unescapeDNS never grows its input.
func FuzzTXT(f *testing.F) {
	f.Add("id", "node-1")
	f.Add("env", `back\slash`)
	f.Add("id", strings.Repeat("é", 200))
	f.Add("v", `\065\`)
	f.Fuzz(func(t *testing.T, key, value string) {
		if u := unescapeDNS(value); len(u) > len(value) {
			t.Fatalf("unescapeDNS grew %q to %q", value, u)
		}
		if key == "" || strings.ContainsAny(key, "=\\") || len(key) > 32 {
			return
		}
		enc := encodeTXT(key, value)
		got, ok := txtValue([]string{enc}, key)
		want := truncateTXT(key, value)
		if !ok || got != want {
			t.Fatalf("encodeTXT(%q, %q) = %q, read back as %q %v, want %q", key, value, enc, got, ok, want)
		}
		if len(key)+1+len(got) > maxTXTStr {
			t.Fatalf("TXT string of %d bytes", len(key)+1+len(got))
		}
		if utf8.ValidString(value) && !utf8.ValidString(got) {
			t.Fatalf("truncation split a rune: %q", got)
		}
	})
}
