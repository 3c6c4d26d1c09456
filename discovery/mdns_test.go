package discovery

// Pure unit tests of the mDNS helpers. Nothing here touches the network:
// MDNS itself only ever runs inside network namespaces (mdns_netns_test.go).

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/grandcat/zeroconf"
	"github.com/miekg/dns"
)

func TestMDNSOptionsAndString(t *testing.T) {
	l := slog.New(slog.DiscardHandler)
	m := MDNS(WithInterfaces("eth0", "eth1"), WithService("_x._udp"), WithDomain("example."),
		WithBrowseInterval(time.Millisecond), WithLogger(l), nil).(*mdnsDiscoverer)
	if m.cfg.service != "_x._udp" || m.cfg.domain != "example." || m.cfg.browse != minBrowseInterval || m.cfg.log != l {
		t.Errorf("options not applied: %+v", m.cfg)
	}
	if m.String() != "mdns on eth0,eth1" {
		t.Errorf("String() = %q", m.String())
	}
	m = MDNS(WithInterfaces(), WithService(""), WithDomain(""), WithBrowseInterval(-1), WithLogger(nil)).(*mdnsDiscoverer)
	if m.cfg.service != "_warren._tcp" || m.cfg.domain != "local." || m.cfg.browse != 0 || m.cfg.log != nil || len(m.cfg.ifaces) != 0 {
		t.Errorf("defaults not kept: %+v", m.cfg)
	}
	if m.String() != "mdns on all interfaces" {
		t.Errorf("String() = %q", m.String())
	}
	if got := MDNS(WithBrowseInterval(3 * time.Second)).(*mdnsDiscoverer).cfg.browse; got != 3*time.Second {
		t.Errorf("browse interval %v", got)
	}
}

func TestBrowseSchedule(t *testing.T) {
	b := &browser{}
	for _, tc := range []struct{ elapsed, want time.Duration }{
		{0, 2 * time.Second}, {9 * time.Second, 2 * time.Second}, {10 * time.Second, 10 * time.Second}, {time.Hour, 10 * time.Second},
	} {
		if got := b.interval(tc.elapsed); got != tc.want {
			t.Errorf("interval(%v) = %v, want %v", tc.elapsed, got, tc.want)
		}
	}
	b.fixed = 300 * time.Millisecond
	if got := b.interval(time.Hour); got != b.fixed {
		t.Errorf("fixed interval = %v", got)
	}
}

func TestValidService(t *testing.T) {
	for _, s := range []string{"_warren._tcp", "_x._udp", "_my-svc._tcp"} {
		if err := validService(s); err != nil {
			t.Errorf("validService(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "warren._tcp", "_warren", "_warren._sctp", "_._tcp", "_a b._tcp", "_x._tcp.local"} {
		if err := validService(s); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("validService(%q) = %v, want ErrInvalidConfig", s, err)
		}
	}
}

func TestMDNSNames(t *testing.T) {
	long := strings.Repeat("é", 40) // 80 bytes
	tests := []struct{ id, inst, host string }{
		{"node-1", "node-1", "node-1"},
		{"Node_1.Example", "Node_1-Example", "node-1-example"},
		{"a b\\c\x01", "a b-c-", "a-b-c"},
		{"---", "---", "warren-" + idHash("---")},
		{"\xff", "-", "warren-" + idHash("\xff")},
	}
	for _, tc := range tests {
		n := newMDNSNames(tc.id)
		if n.instance != tc.inst || n.host != tc.host {
			t.Errorf("newMDNSNames(%q) = %+v, want instance %q host %q", tc.id, n, tc.inst, tc.host)
		}
	}
	for _, id := range []string{strings.Repeat("x", 64), long, strings.Repeat("n.", 100), long + "a"} {
		n := newMDNSNames(id)
		for _, label := range []string{n.instance, n.host} {
			if len(label) > 63 || !utf8.ValidString(label) || strings.ContainsAny(label, `.\`) {
				t.Errorf("newMDNSNames(%q): bad label %q (%d bytes)", id, label, len(label))
			}
		}
		if !strings.HasSuffix(n.instance, "-"+idHash(id)) {
			t.Errorf("newMDNSNames(%q): truncated instance %q lacks the hash suffix", id, n.instance)
		}
	}
	for _, id := range []string{strings.Repeat("x", 64), strings.Repeat("n.", 100)} {
		if n := newMDNSNames(id); len(n.host) != 63 || !strings.HasSuffix(n.host, "-"+idHash(id)) {
			t.Errorf("newMDNSNames(%q): truncated host %q lacks the hash suffix", id, n.host)
		}
	}
	if a, b := newMDNSNames(long), newMDNSNames(long+"a"); a.instance == b.instance || a.host == b.host {
		t.Errorf("long ids with a common prefix collide: %+v %+v", a, b)
	}
}

// TestNamesSurviveDNSWire packs and unpacks names and TXT strings with
// miekg/dns (as zeroconf does) and checks that the local node recognises
// its own announcement afterwards.
func TestNamesSurviveDNSWire(t *testing.T) {
	for _, id := range []string{
		"plain-id",
		`we"ird \id; (x) @home 'q'` + "\tü\x7f",
		strings.Repeat("ß", 200), // TXT truncation
		strings.Repeat("x", 300),
	} {
		names := newMDNSNames(id)
		svc := "_warren._tcp.local."
		inst := names.instance + "." + svc
		msg := new(dns.Msg)
		msg.Response = true
		msg.Answer = []dns.RR{
			&dns.PTR{Hdr: dns.RR_Header{Name: svc, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 120}, Ptr: inst},
			&dns.TXT{Hdr: dns.RR_Header{Name: inst, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 120},
				Txt: []string{encodeTXT(txtKeyID, id), encodeTXT(txtKeyEnv, id), encodeTXT(txtKeyVersion, "1")}},
		}
		buf, err := msg.Pack()
		if err != nil {
			t.Fatalf("pack %q: %v", id, err)
		}
		var got dns.Msg
		if err := got.Unpack(buf); err != nil {
			t.Fatalf("unpack %q: %v", id, err)
		}
		ptr := got.Answer[0].(*dns.PTR)
		txt := got.Answer[1].(*dns.TXT)
		// zeroconf derives the instance like this:
		instance := strings.Trim(strings.Replace(ptr.Ptr, ptr.Hdr.Name, "", -1), ".")
		if unescapeDNS(instance) != names.instance {
			t.Errorf("instance %q came back as %q", names.instance, instance)
		}
		gotID, ok := txtValue(txt.Txt, txtKeyID)
		if !ok || gotID != truncateTXT(txtKeyID, id) {
			t.Errorf("id %q came back as %q (%v)", id, gotID, ok)
		}
		if len(id) < 200 && gotID != id {
			t.Errorf("short id %q not preserved: %q", id, gotID)
		}
		if v, _ := txtValue(txt.Txt, txtKeyVersion); v != "1" {
			t.Errorf("version %q", v)
		}
		self := selfMatch{instance: "other", id: truncateTXT(txtKeyID, id)}
		if !self.isSelf(&zeroconf.ServiceEntry{ServiceRecord: zeroconf.ServiceRecord{Instance: "x"}, Text: txt.Txt}) {
			t.Errorf("id %q: own TXT not recognised", id)
		}
		self = selfMatch{instance: names.instance, id: "other"}
		if !self.isSelf(&zeroconf.ServiceEntry{ServiceRecord: zeroconf.ServiceRecord{Instance: instance}}) {
			t.Errorf("id %q: own instance %q not recognised", id, instance)
		}
	}
}

func TestUnescapeDNS(t *testing.T) {
	for in, want := range map[string]string{
		``: ``, `abc`: `abc`, `a\.b`: `a.b`, `a\\b`: `a\b`, `\032x`: ` x`, `\195\188`: "ü", `\999`: `999`, `x\`: `x\`, `\12`: `12`,
	} {
		if got := unescapeDNS(in); got != want {
			t.Errorf("unescapeDNS(%q) = %q, want %q", in, got, want)
		}
	}
}

func entry(instance string, port int, txt []string, ips ...string) *zeroconf.ServiceEntry {
	e := zeroconf.NewServiceEntry(instance, "_warren._tcp", "local.")
	e.Port, e.Text, e.TTL = port, txt, 120
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip.To4() != nil {
			e.AddrIPv4 = append(e.AddrIPv4, ip)
		} else {
			e.AddrIPv6 = append(e.AddrIPv6, ip)
		}
	}
	return e
}

func TestEntryAddr(t *testing.T) {
	tests := []struct {
		e    *zeroconf.ServiceEntry
		zone string
		want string
	}{
		{entry("a", 7946, nil, "fd00::1", "10.0.0.1", "10.0.0.2"), "", "10.0.0.1:7946"},
		{entry("a", 7000, nil, "0.0.0.0", "10.0.0.2"), "", "10.0.0.2:7000"},
		{entry("a", 7946, nil, "fd00::1", "fd00::2"), "", "[fd00::1]:7946"},
		{entry("a", 7946, nil, "fe80::1", "fd00::2"), "", "[fd00::2]:7946"},
		{entry("a", 7946, nil, "fe80::1"), "eth0", "[fe80::1%eth0]:7946"},
		{entry("a", 7946, nil, "fe80::1"), "", ""},
		{entry("a", 0, nil, "10.0.0.1"), "", ""},
		{entry("a", 70000, nil, "10.0.0.1"), "", ""},
		{entry("a", 7946, nil), "", ""},
	}
	for i, tc := range tests {
		got, ok := entryAddr(tc.e, tc.zone)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("case %d: entryAddr = %q %v, want %q", i, got, ok, tc.want)
		}
	}
}

func TestBrowserAccept(t *testing.T) {
	var logs bytes.Buffer
	b := &browser{
		log:  slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		self: selfMatch{instance: "me", id: "me-id", addr: "10.0.0.1:7946", env: "prod"},
	}
	tests := []struct {
		e    *zeroconf.ServiceEntry
		want string
	}{
		{entry("peer", 7946, []string{"id=peer", "env=prod", "v=1"}, "10.0.0.2"), "10.0.0.2:7946"},
		{entry("peer", 7946, nil, "10.0.0.2"), "10.0.0.2:7946"},                   // no TXT: accepted
		{entry("peer", 7946, []string{"env="}, "10.0.0.2"), "10.0.0.2:7946"},      // empty env: accepted
		{entry("me", 7946, []string{"id=x"}, "10.0.0.9"), ""},                     // own instance
		{entry("renamed", 7946, []string{"id=me-id"}, "10.0.0.9"), ""},            // own id
		{entry("ghost", 7946, []string{"id=ghost"}, "10.0.0.1"), ""},              // own address
		{entry("peer", 7946, []string{"id=peer", "env=staging"}, "10.0.0.2"), ""}, // other environment
		{entry("peer", 7946, []string{"id=peer"}, "fe80::2"), ""},                 // no zone known
		{nil, ""},
	}
	for i, tc := range tests {
		got, ok := b.accept(tc.e)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("case %d: accept = %q %v, want %q", i, got, ok, tc.want)
		}
	}
	// Without a local environment every environment is accepted.
	b.self.env = ""
	if got, _ := b.accept(entry("peer", 1, []string{"env=staging"}, "10.0.0.2")); got != "10.0.0.2:1" {
		t.Errorf("env filter applied without a local environment: %q", got)
	}
}

func TestAdvertisedAddr(t *testing.T) {
	cands := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"),
		netip.MustParseAddr("fe80::1").WithZone("eth0"),
		netip.MustParseAddr("10.0.0.7"),
		netip.MustParseAddr("10.0.0.8"),
	}
	v6only := []netip.Addr{netip.MustParseAddr("fe80::1").WithZone("eth0")}
	tests := []struct {
		addr  string
		cands []netip.Addr
		want  string
		err   error
	}{
		{"10.1.1.1:7946", cands, "10.1.1.1:7946", nil},
		{"[fd00::1]:7000", cands, "[fd00::1]:7000", nil},
		{"[::ffff:10.1.1.1]:7", cands, "10.1.1.1:7", nil},
		{"0.0.0.0:7946", cands, "10.0.0.7:7946", nil},
		{"[::]:7946", cands, "10.0.0.7:7946", nil},
		{"0.0.0.0:7946", v6only, "[fe80::1%eth0]:7946", nil},
		{"0.0.0.0:7946", nil, "", ErrInterface},
		{"host.example:7946", cands, "", ErrInvalidSelf},
		{"10.1.1.1", cands, "", ErrInvalidSelf},
		{"10.1.1.1:0", cands, "", ErrInvalidSelf},
		{"10.1.1.1:x", cands, "", ErrInvalidSelf},
		{"", cands, "", ErrInvalidSelf},
	}
	for _, tc := range tests {
		got, err := advertisedAddr(tc.addr, tc.cands)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("advertisedAddr(%q) = %v, %v; want %v", tc.addr, got, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("advertisedAddr(%q) = %v, %v; want %q", tc.addr, got, err, tc.want)
		}
	}
}

func TestIPTraffic(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fe80::1")
	for _, tc := range []struct {
		addrs []netip.Addr
		want  zeroconf.IPType
	}{
		{nil, zeroconf.IPv4AndIPv6},
		{[]netip.Addr{v4}, zeroconf.IPv4},
		{[]netip.Addr{v6}, zeroconf.IPv6},
		{[]netip.Addr{v6, v4}, zeroconf.IPv4AndIPv6},
	} {
		if got := ipTraffic(tc.addrs); got != tc.want {
			t.Errorf("ipTraffic(%v) = %v, want %v", tc.addrs, got, tc.want)
		}
	}
}
