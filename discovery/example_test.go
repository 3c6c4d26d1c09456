package discovery_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/warrenmesh/warren/discovery"
)

func ExampleStatic() {
	d := discovery.Static("10.0.0.1", "10.0.0.2:8000", "[fd00::1]")
	fmt.Println(d)

	// Run reports the seeds at once and then every 30 s until ctx ends.
	ctx, cancel := context.WithCancel(context.Background())
	err := d.Run(ctx, discovery.Self{}, func(addrs []string) {
		fmt.Println(addrs)
		cancel()
	})
	fmt.Println("Run returned", err)
	// Output:
	// seeds 10.0.0.1:7946, 10.0.0.2:8000, [fd00::1]:7946
	// [10.0.0.1:7946 10.0.0.2:8000 [fd00::1]:7946]
	// Run returned <nil>
}

func ExampleParseSeeds() {
	// IP literals become static seeds; names (with or without "dns:") are
	// re-resolved, e.g. a Kubernetes headless service or a Compose service.
	d, err := discovery.ParseSeeds("10.0.0.5:7946, [fd00::7] dns:warren-peers.default.svc.cluster.local validation-service:7000")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d)

	d, err = discovery.ParseSeeds("")
	fmt.Println(d == nil, err)

	_, err = discovery.ParseSeeds("10.0.0.5:7946 10.0.0.6:99999")
	fmt.Println(err)
	fmt.Println(errors.Is(err, discovery.ErrInvalidSeed))
	// Output:
	// seeds 10.0.0.5:7946, [fd00::7]:7946 + dns warren-peers.default.svc.cluster.local:7946 + dns validation-service:7000
	// true <nil>
	// discovery: invalid seed "10.0.0.6:99999": bad port "99999"
	// true
}
