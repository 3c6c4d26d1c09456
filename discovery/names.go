package discovery

import (
	"fmt"
	"hash/fnv"
	"strings"
	"unicode/utf8"

	"github.com/grandcat/zeroconf"
)

const (
	maxLabel  = 63  // DNS label limit, bytes
	maxTXTStr = 255 // TXT character-string limit, bytes

	txtKeyID      = "id"
	txtKeyEnv     = "env"
	txtKeyVersion = "v"
)

// mdnsNames are the DNS names derived from a NodeID.
type mdnsNames struct {
	instance string // DNS-SD instance label
	host     string // host label (without the domain)
}

// newMDNSNames derives the instance and host labels from a NodeID.
//
// The instance keeps the NodeID readable but replaces what zeroconf cannot
// carry in a label ('.', '\\' and control characters). The host is
// lower-case letters, digits and '-'. Both are at most 63 bytes: a longer
// value is cut at a rune boundary and suffixed with a hash of the whole
// NodeID, so distinct long ids keep distinct names.
func newMDNSNames(nodeID string) mdnsNames {
	inst := strings.Map(func(r rune) rune {
		if r == '.' || r == '\\' || r < 0x20 || r == 0x7f {
			return '-'
		}
		return r
	}, strings.ToValidUTF8(nodeID, "-"))
	host := strings.Trim(strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '-'
	}, nodeID), "-")
	if inst == "" {
		inst = "warren"
	}
	if host == "" {
		host = "warren-" + idHash(nodeID)
	}
	return mdnsNames{instance: fitLabel(inst, nodeID), host: fitLabel(host, nodeID)}
}

// fitLabel returns s if it fits a DNS label, else a prefix of s cut at a
// rune boundary plus "-" and a hash of id.
func fitLabel(s, id string) string {
	if len(s) <= maxLabel {
		return s
	}
	suffix := "-" + idHash(id)
	return truncateUTF8(s, maxLabel-len(suffix)) + suffix
}

func idHash(id string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	return fmt.Sprintf("%08x", h.Sum32())
}

// truncateUTF8 returns the longest prefix of s of at most n bytes that does
// not split a UTF-8 sequence.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// truncateTXT returns the value part of "key=value" as it fits a TXT
// string (255 bytes).
func truncateTXT(key, value string) string {
	return truncateUTF8(value, maxTXTStr-len(key)-1)
}

// encodeTXT builds a "key=value" TXT string, truncated to 255 bytes and
// escaped for miekg/dns, which treats '\' as an escape character when
// packing.
func encodeTXT(key, value string) string {
	return strings.ReplaceAll(key+"="+truncateTXT(key, value), `\`, `\\`)
}

// txtValue finds key in TXT strings as received from zeroconf (escaped by
// miekg/dns) and returns its unescaped value.
func txtValue(txt []string, key string) (string, bool) {
	for _, t := range txt {
		t = unescapeDNS(t)
		if v, ok := strings.CutPrefix(t, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// unescapeDNS undoes miekg/dns presentation escapes: "\DDD" (decimal byte)
// and "\X" (literal X).
func unescapeDNS(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			v := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if v <= 0xff {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func trimDot(s string) string { return strings.Trim(s, ".") }

// selfMatch recognises the local node's own announcement.
type selfMatch struct {
	instance string // our instance label
	id       string // our NodeID as carried in TXT (truncated)
	addr     string // our advertised "ip:port"
	env      string // our environment as carried in TXT (truncated)
}

// isSelf reports whether e is the local node's own announcement: same
// instance name or same id= TXT value.
func (s selfMatch) isSelf(e *zeroconf.ServiceEntry) bool {
	if unescapeDNS(e.Instance) == s.instance {
		return true
	}
	id, ok := txtValue(e.Text, txtKeyID)
	return ok && id == s.id
}
