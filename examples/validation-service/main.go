// Command validation-service answers warren "validate" requests: a card
// number of 6 to 19 digits is valid; anything else is rejected with the
// error code invalid_card and a message saying why. Each reply names the
// instance that did the work. Start as many copies as you like, on this
// host or others: requests are spread over them round-robin, and they are
// found with no configuration (mDNS on a LAN, WARREN_SEEDS elsewhere).
//
// Usage:
//
//	validation-service [-delay 500ms]
//
// Settings:
//
//	-delay, VALIDATION_DELAY  artificial work time per request (default 0)
//	WARREN_*                  mesh settings, see package mesh
//
// SIGINT or SIGTERM drains it gracefully: requests in progress finish, new
// ones go to the other instances (or wait for one).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/warrenmesh/warren/examples/internal/contract"
	"github.com/warrenmesh/warren/examples/internal/svc"
	"github.com/warrenmesh/warren/responder"
)

const service = "validation-service"

func main() {
	log := svc.Logger(service)
	if err := run(log); err != nil {
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	defDelay, err := svc.EnvDuration("VALIDATION_DELAY", 0)
	if err != nil {
		return err
	}
	delay := flag.Duration("delay", defDelay, "artificial work time per request (env VALIDATION_DELAY)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	node, err := svc.Node(service)
	if err != nil {
		return err
	}
	r, err := responder.New(service, responder.WithMesh(node))
	if err != nil {
		_ = svc.Shutdown(log, svc.Step{Name: "mesh", Close: node.Close})
		return err
	}
	v := &validator{id: node.ID(), delay: *delay, log: log}
	responder.Handle(r, contract.ValidateType, v.validate)
	log.Info("ready", "node", node.ID(), "gossip", node.Addr(), "delay", *delay)

	<-ctx.Done()
	stop() // a second signal ends the process at once
	log.Info("shutting down", "node", node.ID())
	return svc.Shutdown(log,
		svc.Step{Name: "responder", Close: r.Close}, // drain: finish what we have, take nothing new
		svc.Step{Name: "mesh", Close: node.Close},   // leave the mesh, so peers drop us at once
	)
}

type validator struct {
	id    string
	delay time.Duration
	log   *slog.Logger
}

func (v *validator) validate(ctx context.Context, req contract.ValidateRequest) (contract.ValidateReply, error) {
	if v.delay > 0 {
		t := time.NewTimer(v.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return contract.ValidateReply{}, ctx.Err()
		}
	}
	if reason := checkCard(req.Card); reason != "" {
		v.log.Info("rejected", "card", req.Card, "reason", reason)
		return contract.ValidateReply{}, responder.Errorf(contract.CodeInvalidCard, "%s", reason)
	}
	v.log.Info("validated", "card", req.Card)
	return contract.ValidateReply{Card: req.Card, Status: "validated", By: v.id}, nil
}

// checkCard returns why card is not a valid card number, or "" if it is:
// a card number is 6 to 19 decimal digits.
func checkCard(card string) string {
	const maxShown = 32
	shown := card
	if utf8.RuneCountInString(shown) > maxShown {
		shown = string([]rune(shown)[:maxShown]) + "..."
	}
	pos := 0
	for _, r := range card {
		pos++
		if r < '0' || r > '9' {
			return fmt.Sprintf("card %q has %q at position %d: a card number has only digits", shown, r, pos)
		}
	}
	if pos < 6 || pos > 19 {
		return fmt.Sprintf("card %q has %d digits: a card number has 6 to 19", shown, pos)
	}
	return ""
}
