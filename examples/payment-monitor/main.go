// Command payment-monitor subscribes to the payment service's events
// (payment.*) and prints one line per event on standard output:
//
//	14:03:07.512 payment.completed card=4111111111111111 by=validation-service-3f2a9c1e
//	14:03:07.530 payment.rejected card=12ab34 by=validation-service-9b1d0e55 reason="card \"12ab34\" has 'a' at position 3: ..."
//
// It shows pub/sub in the example: every monitor started gets every event.
// Events published while no monitor runs are not kept (they are volatile,
// as in cote).
//
// Settings: WARREN_* (mesh settings, see package mesh).
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/warrenmesh/warren/examples/internal/contract"
	"github.com/warrenmesh/warren/examples/internal/svc"
	"github.com/warrenmesh/warren/subscriber"
)

const service = "payment-monitor"

func main() {
	log := svc.Logger(service)
	if err := run(log); err != nil {
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	node, err := svc.Node(service)
	if err != nil {
		return err
	}
	sub, err := subscriber.New(service, subscriber.WithMesh(node))
	if err != nil {
		_ = svc.Shutdown(logger, svc.Step{Name: "mesh", Close: node.Close})
		return err
	}
	out := log.New(os.Stdout, "", log.Ltime|log.Lmicroseconds) // safe for concurrent use
	sub.On(contract.TopicAll, func(_ context.Context, m *subscriber.Message) {
		out.Print(describe(m))
	})
	logger.Info("ready", "node", node.ID(), "gossip", node.Addr(), "topics", contract.TopicAll)

	<-ctx.Done()
	stop() // a second signal ends the process at once
	logger.Info("shutting down", "node", node.ID())
	return svc.Shutdown(logger,
		svc.Step{Name: "subscriber", Close: sub.Close},
		svc.Step{Name: "mesh", Close: node.Close},
	)
}

// describe renders one event as a line.
func describe(m *subscriber.Message) string {
	var ev contract.PaymentEvent
	if err := m.Decode(&ev); err != nil {
		return fmt.Sprintf("%s (undecodable: %v)", m.Topic, err)
	}
	line := fmt.Sprintf("%s card=%s by=%s", m.Topic, ev.Card, ev.By)
	if ev.Reason != "" {
		line += fmt.Sprintf(" reason=%q", ev.Reason)
	}
	return line
}
