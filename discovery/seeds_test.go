package discovery

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSeeds(t *testing.T) {
	tests := []struct {
		in   string
		want string // String() of the result; "" for nil
	}{
		{"", ""},
		{" ,, \n\t", ""},
		{"10.0.0.1", "seeds 10.0.0.1:7946"},
		{"10.0.0.1:7000", "seeds 10.0.0.1:7000"},
		{"10.0.0.1:7000,10.0.0.2 10.0.0.3:1", "seeds 10.0.0.1:7000, 10.0.0.2:7946, 10.0.0.3:1"},
		{"10.0.0.1 10.0.0.1:7946", "seeds 10.0.0.1:7946"},
		{"[fd00::1]:7000", "seeds [fd00::1]:7000"},
		{"[fd00::1]", "seeds [fd00::1]:7946"},
		{"fd00::1", "seeds [fd00::1]:7946"},
		{"::1", "seeds [::1]:7946"},
		{"[fe80::1%eth0]:7000", "seeds [fe80::1%eth0]:7000"},
		{"validation-service", "dns validation-service:7946"},
		{"validation-service:7000", "dns validation-service:7000"},
		{"dns:validation-service", "dns validation-service:7946"},
		{"DNS:peers.default.svc.cluster.local.:7001", "dns peers.default.svc.cluster.local.:7001"},
		{"dns:10.0.0.5:9", "seeds 10.0.0.5:9"},
		{"myproj_web_1", "dns myproj_web_1:7946"},
		{"svc svc:7946 dns:svc", "dns svc:7946"},
		{"svc:1 svc:2", "dns svc:1 + dns svc:2"},
		{"a.example:7946, 10.0.0.1, [fd00::2]:7000 b", "seeds 10.0.0.1:7946, [fd00::2]:7000 + dns a.example:7946 + dns b:7946"},
	}
	for _, tc := range tests {
		d, err := ParseSeeds(tc.in)
		if err != nil {
			t.Errorf("ParseSeeds(%q): %v", tc.in, err)
			continue
		}
		got := ""
		if d != nil {
			got = d.String()
		}
		if got != tc.want {
			t.Errorf("ParseSeeds(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseSeedsInvalid(t *testing.T) {
	tests := []struct{ in, entry string }{
		{"10.0.0.1:99999", "10.0.0.1:99999"},
		{"10.0.0.1:0", "10.0.0.1:0"},
		{"10.0.0.1:-1", "10.0.0.1:-1"},
		{"10.0.0.1:http", "10.0.0.1:http"},
		{"10.0.0.1:", "10.0.0.1:"},
		{"ok:1, :7946", ":7946"},
		{"dns:", "dns:"},
		{"dns::7946", "dns::7946"},
		{"[fd00::1]:70000", "[fd00::1]:70000"},
		{"[fd00::1", "[fd00::1"},
		{"[fd00::1]x", "[fd00::1]x"},
		{"[fd00::1]:", "[fd00::1]:"},
		{"[]:7946", "[]:7946"},
		{"[host]:7946", "[host]:7946"},
		{"fd00::1:7946:x", "fd00::1:7946:x"},
		{"bad/host", "bad/host"},
		{"dns:bad/host:1", "dns:bad/host:1"},
		{"a..b", "a..b"},
		{"ok " + strings.Repeat("x", 64), strings.Repeat("x", 64)},
	}
	for _, tc := range tests {
		d, err := ParseSeeds(tc.in)
		if err == nil {
			t.Errorf("ParseSeeds(%q) = %v, want error", tc.in, d)
			continue
		}
		if !errors.Is(err, ErrInvalidSeed) {
			t.Errorf("ParseSeeds(%q) error %v does not wrap ErrInvalidSeed", tc.in, err)
		}
		if !strings.Contains(err.Error(), `"`+tc.entry+`"`) {
			t.Errorf("ParseSeeds(%q) error %q does not name entry %q", tc.in, err, tc.entry)
		}
	}
}

func TestParseSeedsPassesDNSOptions(t *testing.T) {
	d, err := ParseSeeds("a b", WithInterval(42))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range d.(multi) {
		if got := m.(*dnsDiscoverer).cfg.interval; got != 42 {
			t.Errorf("%s: interval %v", m, got)
		}
	}
}

func TestNormalizeAddr(t *testing.T) {
	tests := map[string]string{
		"":              "",
		"  ":            "",
		"[]":            "",
		":80":           "",
		"10.0.0.1":      "10.0.0.1:7946",
		"10.0.0.1:80":   "10.0.0.1:80",
		"10.0.0.1:":     "10.0.0.1:7946",
		"fd00::1":       "[fd00::1]:7946",
		"[fd00::1]":     "[fd00::1]:7946",
		"[fd00::1]:80":  "[fd00::1]:80",
		"host":          "host:7946",
		"host:1":        "host:1",
		" host:1 ":      "host:1",
		"fe80::1%eth0":  "[fe80::1%eth0]:7946",
		"[fe80::1%e]:1": "[fe80::1%e]:1",
	}
	for in, want := range tests {
		if got := normalizeAddr(in); got != want {
			t.Errorf("normalizeAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
