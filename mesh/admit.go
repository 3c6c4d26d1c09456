package mesh

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

// admit decides which nodes memberlist may take in as members. Gossip is
// unauthenticated unless a SecretKey is set (WithGossipConfig), so any
// datagram that parses as an "alive" message would otherwise add a member:
// random bytes once added one with no address, which the node then tried to
// probe. A warren node announces a usable address and warren's metadata;
// anything else is refused.
type admit Node

var errNotWarren = errors.New("mesh: not a warren node")

func (a *admit) check(m *memberlist.Node) error {
	n := (*Node)(a)
	if m.Name == n.id {
		return nil // ourselves, whose metadata is filled in after start
	}
	ip, ok := netip.AddrFromSlice(m.Addr)
	ip = ip.Unmap()
	if !ok || !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || m.Port == 0 {
		return fmt.Errorf("%w: %q announces the unusable address %s", errNotWarren, m.Name, net.JoinHostPort(net.IP(m.Addr).String(), fmt.Sprint(m.Port)))
	}
	meta := string(m.Meta)
	if !strings.HasPrefix(meta, metaV1) {
		return fmt.Errorf("%w: %q has no warren metadata", errNotWarren, m.Name)
	}
	if d := meta[len(metaV1):]; d != "" {
		if ap, err := netip.ParseAddrPort(d); err != nil || ap.Port() == 0 || ap.Addr().Unmap().IsUnspecified() {
			return fmt.Errorf("%w: %q announces the data address %q", errNotWarren, m.Name, d)
		}
	}
	return nil
}

// NotifyAlive implements memberlist.AliveDelegate.
func (a *admit) NotifyAlive(m *memberlist.Node) error { return a.check(m) }

// NotifyMerge implements memberlist.MergeDelegate: a push/pull (a join)
// carrying a node that is not warren's is refused whole.
func (a *admit) NotifyMerge(peers []*memberlist.Node) error {
	for _, m := range peers {
		if err := a.check(m); err != nil {
			return err
		}
	}
	return nil
}

// loopbackOnly is the safety net of test binaries in the host's network
// namespace: a node bound to loopback (or to every address) with no
// interface named has its gossip confined to loopback, so a test that feeds
// it junk can never make it send a packet to an address on the real
// network. Nodes of the multi-host tests bind their namespace's address.
func loopbackOnly(cfg *config, bindHost string, mc *memberlist.Config) {
	if !testing.Testing() || len(cfg.interfaces) > 0 {
		return
	}
	if ip, err := netip.ParseAddr(bindHost); err != nil || !(ip.IsLoopback() || ip.IsUnspecified()) {
		return
	}
	_, v4, _ := net.ParseCIDR("127.0.0.0/8")
	_, v6, _ := net.ParseCIDR("::1/128")
	mc.CIDRsAllowed = []net.IPNet{*v4, *v6}
}
