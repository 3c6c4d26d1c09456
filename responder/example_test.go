package responder_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
)

type Card struct {
	Number string `json:"number"`
}

func ExampleHandle() {
	// One loopback node, mDNS off; requester and responder share it.
	node, _ := mesh.New(mesh.WithBindAddr("127.0.0.1:0"), mesh.WithMDNS(false))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer node.Close(ctx)

	r, _ := responder.New("validation-service", responder.WithMesh(node))
	defer r.Close(ctx)
	responder.Handle(r, "validate", func(ctx context.Context, c Card) (string, error) {
		if len(c.Number) < 6 {
			return "", responder.Errorf("invalid_card", "card %q is too short", c.Number)
		}
		return c.Number + " validated", nil
	})

	req, _ := requester.New("payment-service", requester.WithMesh(node))
	defer req.Close(ctx)
	fmt.Println(requester.Call[string](ctx, req, "validate", Card{"123456"}))
	_, err := requester.Call[string](ctx, req, "validate", Card{"12"})
	var remote *requester.RemoteError
	fmt.Println(errors.As(err, &remote), remote.Code)
	// Output:
	// 123456 validated <nil>
	// true invalid_card
}

func ExampleResponder_On_wildcard() {
	node, _ := mesh.New(mesh.WithBindAddr("127.0.0.1:0"), mesh.WithMDNS(false))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer node.Close(ctx)

	r, _ := responder.New("audit", responder.WithMesh(node))
	defer r.Close(ctx)
	// "**" answers every type; req.Type is the type that was sent.
	r.On("**", func(_ context.Context, req *responder.Request) (any, error) {
		return "seen " + req.Type, nil
	})
	req, _ := requester.New("client", requester.WithMesh(node))
	defer req.Close(ctx)
	fmt.Println(requester.Call[string](ctx, req, "card.refund", nil))
	// Output:
	// seen card.refund <nil>
}
