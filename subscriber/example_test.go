package subscriber_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/publisher"
	"github.com/warrenmesh/warren/subscriber"
)

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

// Patterns: "*" matches one segment, a final "**" the rest; the message
// always carries the full topic, and overlapping patterns deliver once.
func ExampleSubscriber_On() {
	ctx := context.Background()
	a, b, err := exampleNodes()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close(ctx)
	defer b.Close(ctx)

	sub, _ := subscriber.New("auditor", subscriber.WithMesh(b))
	defer sub.Close(ctx)
	done := make(chan struct{})
	sub.On("user.*", func(_ context.Context, m *subscriber.Message) {
		fmt.Println("user.*  ", m.Topic)
	})
	sub.On("user.**", func(_ context.Context, m *subscriber.Message) {
		fmt.Println("user.** ", m.Topic)
		if m.Topic == "user.profile.updated" {
			close(done)
		}
	})

	pub, _ := publisher.New("accounts", publisher.WithMesh(a))
	defer pub.Close(ctx)
	if err := awaitSubscribers(a, 1); err != nil {
		fmt.Println(err)
		return
	}
	pub.Publish(ctx, "user.created", nil)
	pub.Publish(ctx, "user.profile.updated", nil)
	<-done
	fmt.Println("frames sent:", pub.Stats().Delivered)
	// Output:
	// user.*   user.created
	// user.**  user.created
	// user.**  user.profile.updated
	// frames sent: 2
}

// Subscribers of one group share the events, round-robin; a subscriber
// without a group gets them all.
func ExampleWithGroup() {
	ctx := context.Background()
	a, b, err := exampleNodes()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close(ctx)
	defer b.Close(ctx)

	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	wg.Add(12) // 6 jobs to the group, 6 to the auditor
	for _, name := range []string{"worker-1", "worker-2", "auditor"} {
		opts := []subscriber.Option{subscriber.WithMesh(b)}
		if name != "auditor" {
			opts = append(opts, subscriber.WithGroup("workers"))
		}
		sub, _ := subscriber.New(name, opts...)
		defer sub.Close(ctx)
		subscriber.Handle(sub, "job.run", func(_ context.Context, id int) {
			mu.Lock()
			counts[name]++
			mu.Unlock()
			wg.Done()
		})
	}

	pub, _ := publisher.New("scheduler", publisher.WithMesh(a))
	defer pub.Close(ctx)
	if err := awaitSubscribers(a, 3); err != nil {
		fmt.Println(err)
		return
	}
	for id := range 6 {
		pub.Publish(ctx, "job.run", id)
	}
	wg.Wait()
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Println(n, counts[n])
	}
	// Output:
	// auditor 6
	// worker-1 3
	// worker-2 3
}
