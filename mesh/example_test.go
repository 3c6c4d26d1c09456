package mesh_test

import (
	"context"
	"fmt"
	"time"

	"github.com/warrenmesh/warren/mesh"
)

func Example() {
	// Two nodes on one machine: loopback addresses, mDNS off, joined by a
	// seed. On a LAN, mesh.New() with no options finds peers by mDNS.
	a, err := mesh.New(mesh.WithName("alpha"), mesh.WithBindAddr("127.0.0.1:0"), mesh.WithMDNS(false))
	if err != nil {
		panic(err)
	}
	b, err := mesh.New(mesh.WithName("beta"), mesh.WithBindAddr("127.0.0.1:0"), mesh.WithMDNS(false),
		mesh.WithSeeds(a.Addr()))
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	defer a.Close(ctx)
	defer b.Close(ctx)

	for len(a.Members()) < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	for _, m := range a.Members() {
		fmt.Println(m.Name)
	}
	// Output:
	// alpha
	// beta
}
