package discovery

import (
	"context"
	"net"
	"strconv"
	"strings"
	"time"
)

// staticInterval is how often Static re-reports its addresses.
const staticInterval = 30 * time.Second

// Static returns a Discoverer that reports the given addresses once at start
// and then again every 30 s, so that the mesh can rejoin after a partition.
// An address without a port gets DefaultPort ("10.0.0.1" -> "10.0.0.1:7946",
// "fd00::1" or "[fd00::1]" -> "[fd00::1]:7946"); empty entries and duplicates
// are dropped. Addresses are reported as given (host names are not resolved;
// use DNS or ParseSeeds for names that must be re-resolved).
func Static(addrs ...string) Discoverer {
	s := &static{every: staticInterval}
	seen := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		a = normalizeAddr(a)
		if a == "" || seen[a] {
			continue
		}
		seen[a] = true
		s.addrs = append(s.addrs, a)
	}
	return s
}

type static struct {
	addrs []string
	every time.Duration
}

func (s *static) String() string {
	if len(s.addrs) == 0 {
		return "seeds (none)"
	}
	return "seeds " + strings.Join(s.addrs, ", ")
}

func (s *static) Run(ctx context.Context, _ Self, found func(addrs []string)) error {
	if len(s.addrs) == 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		// A fresh copy each time: found may keep or modify the slice.
		found(append([]string(nil), s.addrs...))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// normalizeAddr leniently turns a seed address into "host:port", adding
// DefaultPort when the port is missing. It returns "" for an empty input.
func normalizeAddr(a string) string {
	a = strings.TrimSpace(a)
	if a == "" {
		return ""
	}
	if host, port, err := net.SplitHostPort(a); err == nil {
		if host == "" {
			return ""
		}
		if port == "" {
			port = strconv.Itoa(DefaultPort)
		}
		return net.JoinHostPort(host, port)
	}
	host := strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
	if host == "" {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(DefaultPort))
}
