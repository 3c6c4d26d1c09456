package publisher_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/publisher"
	"github.com/warrenmesh/warren/subscriber"
)

type Payment struct {
	Card   string `json:"card"`
	Amount int    `json:"amount"`
}

// exampleNodes starts two nodes that find each other by a loopback seed,
// with multicast discovery off: safe to run anywhere.
func exampleNodes() (a, b *mesh.Node, err error) {
	quiet := mesh.WithLogger(slog.New(slog.DiscardHandler))
	a, err = mesh.New(mesh.WithName("a"), mesh.WithBindAddr("127.0.0.1:0"), mesh.WithMDNS(false), quiet)
	if err != nil {
		return nil, nil, err
	}
	b, err = mesh.New(mesh.WithName("b"), mesh.WithBindAddr("127.0.0.1:0"), mesh.WithMDNS(false), quiet,
		mesh.WithSeeds(a.Addr()))
	if err != nil {
		a.Close(context.Background())
		return nil, nil, err
	}
	return a, b, nil
}

// awaitSubscribers waits until node n sees k subscribers.
func awaitSubscribers(n *mesh.Node, k int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return n.Await(ctx, func(cs []mesh.Component) bool {
		got := 0
		for _, c := range cs {
			if c.Kind == mesh.KindSubscriber {
				got++
			}
		}
		return got == k
	})
}

func Example() {
	ctx := context.Background()
	a, b, err := exampleNodes()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close(ctx)
	defer b.Close(ctx)

	// A payment monitor on node b...
	sub, _ := subscriber.New("payment-monitor", subscriber.WithMesh(b))
	defer sub.Close(ctx)
	done := make(chan struct{})
	subscriber.Handle(sub, "payment.*", func(_ context.Context, p Payment) {
		fmt.Printf("payment of %d on card %s\n", p.Amount, p.Card)
		close(done)
	})

	// ...and a payment service on node a.
	pub, _ := publisher.New("payment-service", publisher.WithMesh(a))
	defer pub.Close(ctx)
	if err := awaitSubscribers(a, 1); err != nil {
		fmt.Println(err)
		return
	}
	if err := pub.Publish(ctx, "payment.completed", Payment{Card: "4111", Amount: 42}); err != nil {
		fmt.Println(err)
		return
	}
	<-done
	// Nobody listens to "audit.*": the event is dropped, and counted.
	pub.Publish(ctx, "audit.login", "alice")
	st := pub.Stats()
	fmt.Printf("published %d, delivered %d, without subscriber %d\n", st.Published, st.Delivered, st.NoSubscriber)
	// Output:
	// payment of 42 on card 4111
	// published 2, delivered 1, without subscriber 1
}
