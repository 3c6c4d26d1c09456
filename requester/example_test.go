package requester_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
)

// exampleNodes starts two loopback nodes joined by a seed, with mDNS off,
// as two processes would on one machine.
func exampleNodes() (a, b *mesh.Node, stop func()) {
	opts := []mesh.Option{mesh.WithBindAddr("127.0.0.1:0"), mesh.WithMDNS(false)}
	a, _ = mesh.New(opts...)
	b, _ = mesh.New(append(opts, mesh.WithSeeds(a.Addr()))...)
	return a, b, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.Close(ctx)
		a.Close(ctx)
	}
}

type Card struct {
	Number string `json:"number"`
}

type Verdict struct {
	Status string `json:"status"`
}

func Example() {
	a, b, stop := exampleNodes()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The validation service, on node b.
	v, _ := responder.New("validation-service", responder.WithMesh(b))
	defer v.Close(ctx)
	responder.Handle(v, "validate", func(ctx context.Context, c Card) (Verdict, error) {
		if len(c.Number) < 6 {
			return Verdict{}, responder.Errorf("invalid_card", "card %q is too short", c.Number)
		}
		return Verdict{Status: "validated"}, nil
	})

	// The payment service, on node a. The first request waits until the
	// validation service is visible: no start-up race.
	p, _ := requester.New("payment-service", requester.WithMesh(a))
	defer p.Close(ctx)
	res, err := requester.Call[Verdict](ctx, p, "validate", Card{Number: "4111111111111111"})
	fmt.Println(res.Status, err)

	_, err = requester.Call[Verdict](ctx, p, "validate", Card{Number: "12"})
	var remote *requester.RemoteError
	if errors.As(err, &remote) {
		fmt.Println(remote.Code, remote.Message)
	}
	// Output:
	// validated <nil>
	// invalid_card card "12" is too short
}

func ExampleRequester_Send_heldUntilAResponderAppears() {
	a, b, stop := exampleNodes()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	p, _ := requester.New("client", requester.WithMesh(a))
	defer p.Close(ctx)
	done := make(chan string)
	go func() {
		var reply string
		if err := p.Send(ctx, "greet", "world", &reply); err != nil {
			reply = err.Error()
		}
		done <- reply
	}()

	time.Sleep(100 * time.Millisecond) // the request is held meanwhile
	fmt.Println("held:", p.Stats().Held)

	r, _ := responder.New("greeter", responder.WithMesh(b))
	defer r.Close(ctx)
	responder.Handle(r, "greet", func(_ context.Context, who string) (string, error) {
		return "hello, " + who, nil
	})
	fmt.Println(<-done)
	// Output:
	// held: 1
	// hello, world
}

func ExampleWithTimeout() {
	a, _, stop := exampleNodes()
	defer stop()
	p, _ := requester.New("client", requester.WithMesh(a), requester.WithTimeout(50*time.Millisecond))
	defer p.Close(context.Background())

	err := p.Send(context.Background(), "validate", Card{Number: "4111111111111111"}, nil)
	fmt.Println(errors.Is(err, requester.ErrTimeout))
	// Output:
	// true
}

// Go sends requests without a goroutine each; Wait collects the replies.
func ExampleRequester_Go() {
	a, b, stop := exampleNodes()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	v, _ := responder.New("validation-service", responder.WithMesh(b))
	defer v.Close(ctx)
	responder.Handle(v, "validate", func(ctx context.Context, c Card) (Verdict, error) {
		return Verdict{Status: "validated " + c.Number}, nil
	})
	p, _ := requester.New("payment-service", requester.WithMesh(a))
	defer p.Close(ctx)

	cards := []string{"4111111111111111", "5500000000000004", "340000000000009"}
	replies := make([]Verdict, len(cards))
	calls := make([]*requester.Pending, len(cards))
	for i, c := range cards {
		calls[i] = p.Go(ctx, "validate", Card{Number: c}, &replies[i])
	}
	for i, call := range calls {
		if err := call.Wait(); err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(replies[i].Status)
	}
	// Output:
	// validated 4111111111111111
	// validated 5500000000000004
	// validated 340000000000009
}
