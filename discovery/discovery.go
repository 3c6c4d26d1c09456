package discovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// DefaultPort is memberlist's conventional gossip port. It is used for seeds
// and DNS names given without a port.
const DefaultPort = 7946

// maxReportInterval bounds the intervals between a discoverer's reports,
// well below the 10 minutes after which a mesh node forgets an address no
// longer reported.
const maxReportInterval = 5 * time.Minute

// Errors returned by this package. Errors are wrapped with %w, so test them
// with errors.Is.
var (
	// ErrInvalidSeed reports a malformed entry given to ParseSeeds.
	ErrInvalidSeed = errors.New("discovery: invalid seed")
	// ErrInvalidConfig reports an invalid discoverer configuration (an empty
	// DNS name, a port out of range, a bad mDNS service name...).
	ErrInvalidConfig = errors.New("discovery: invalid configuration")
	// ErrInvalidSelf reports a Self that a discoverer cannot announce (no
	// NodeID, an Addr that is not "ip:port").
	ErrInvalidSelf = errors.New("discovery: invalid self")
	// ErrInterface reports an unknown or unusable network interface.
	ErrInterface = errors.New("discovery: unusable network interface")
	// ErrMDNS reports a failure of the mDNS responder or resolver.
	ErrMDNS = errors.New("discovery: mdns")
)

// Self describes the local node to discoverers that announce it.
type Self struct {
	NodeID      string // unique node id (also the mDNS instance name)
	Addr        string // gossip address peers should use, "ip:port" (the advertised one)
	Environment string
}

// Discoverer finds gossip addresses of peers.
//
// Run blocks until ctx ends (then returns nil) or a fatal setup error occurs.
// It calls found whenever it learns peer addresses "host:port", possibly
// repeatedly with the same addresses; found must tolerate duplicates and the
// caller should skip addresses that are already members. found is never
// called after Run returns. The discoverers of this package never call found
// concurrently with itself, but callers of arbitrary Discoverers should not
// rely on that.
//
// A Discoverer should report the addresses it still knows again from time
// to time, as those of this package do (Static every 30 s, DNS at each
// lookup, MDNS at each browse): a mesh node forgets an address that is not
// a member and that no discoverer has reported for 10 minutes, so that it
// stops dialling nodes that are gone (a pod replaced behind a DNS name).
type Discoverer interface {
	Run(ctx context.Context, self Self, found func(addrs []string)) error
	// String is a short human description for logs, e.g. "mdns on eth0",
	// "seeds 10.0.0.1:7946" or "dns validation-service:7946".
	String() string
}

// Multi returns a Discoverer that runs all ds concurrently. Nil entries are
// ignored and nested Multis are flattened; Multi of a single Discoverer
// returns it unchanged. Its String joins theirs with " + " ("none" when
// empty).
//
// A member that fails does not stop the others (a broken mDNS setup must not
// cost the node its seeds): Run returns once ctx ends or every member has
// returned, with the members' errors joined (nil if none failed). Calls to
// found are serialised.
func Multi(ds ...Discoverer) Discoverer {
	var flat multi
	for _, d := range ds {
		switch d := d.(type) {
		case nil:
		case multi:
			flat = append(flat, d...)
		default:
			flat = append(flat, d)
		}
	}
	if len(flat) == 1 {
		return flat[0]
	}
	return flat
}

type multi []Discoverer

func (m multi) String() string {
	if len(m) == 0 {
		return "none"
	}
	parts := make([]string, len(m))
	for i, d := range m {
		parts[i] = d.String()
	}
	return strings.Join(parts, " + ")
}

func (m multi) Run(ctx context.Context, self Self, found func(addrs []string)) error {
	if len(m) == 0 {
		<-ctx.Done()
		return nil
	}
	var (
		foundMu sync.Mutex
		errMu   sync.Mutex
		errs    []error
		wg      sync.WaitGroup
	)
	report := func(addrs []string) {
		foundMu.Lock()
		defer foundMu.Unlock()
		found(addrs)
	}
	for _, d := range m {
		wg.Go(func() {
			if err := d.Run(ctx, self, report); err != nil {
				errMu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", d, err))
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
