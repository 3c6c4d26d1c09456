// Command payment-service is an HTTP API that takes payments and asks a
// validation service, over warren, to validate each card.
//
//	GET /pay/{card}  200 {"card":"4111111111111111","status":"validated","by":"validation-service-3f2a9c1e"}
//	                 422 {"card":"12ab","status":"rejected","error":"card \"12ab\" has ...","code":"invalid_card",...}
//	                 504 {"card":"...","status":"timeout","error":"no validation service answered within 30s"}
//	GET /healthz     200 {"status":"ok","node":"payment-service-...","members":5,"validators":3,"subscribers":1}
//
// When no validation service is running, a payment waits (as in cote) until
// one appears or the wait limit passes, then answers 504. Each validated
// payment is published as a payment.completed event, each rejected one as
// payment.rejected.
//
// Settings:
//
//	PORT                    HTTP port (default 8080)
//	-listen                 HTTP listen address (default ":$PORT")
//	-wait, PAYMENT_WAIT     how long a payment waits for validation (default 30s)
//	WARREN_*                mesh settings, see package mesh
//
// SIGINT or SIGTERM shuts it down gracefully: the HTTP server stops taking
// connections and lets running payments finish, then it leaves the mesh.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/examples/internal/svc"
	"github.com/warrenmesh/warren/publisher"
	"github.com/warrenmesh/warren/requester"
)

const (
	service = "payment-service"
	// httpDrain bounds how long shutdown waits for running payments before
	// the held ones are failed with 503.
	httpDrain = 5 * time.Second
)

func main() {
	log := svc.Logger(service)
	if err := run(log); err != nil {
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	defWait, err := svc.EnvDuration("PAYMENT_WAIT", 30*time.Second)
	if err != nil {
		return err
	}
	listen := flag.String("listen", ":"+cmp.Or(os.Getenv("PORT"), "8080"), "HTTP listen address (env PORT sets the port)")
	wait := flag.Duration("wait", defWait, "how long a payment waits for a validation service (env PAYMENT_WAIT)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	node, err := svc.Node(service)
	if err != nil {
		ln.Close()
		return err
	}
	req, err := requester.New(service, requester.WithMesh(node))
	if err != nil {
		ln.Close()
		_ = svc.Shutdown(log, svc.Step{Name: "mesh", Close: node.Close})
		return err
	}
	pub, err := publisher.New(service, publisher.WithMesh(node))
	if err != nil {
		ln.Close()
		_ = svc.Shutdown(log, svc.Step{Name: "requester", Close: req.Close}, svc.Step{Name: "mesh", Close: node.Close})
		return err
	}
	s := &server{node: node, req: req, pub: pub, wait: *wait, log: log}
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("ready", "http", ln.Addr().String(), "node", node.ID(), "gossip", node.Addr(), "wait", *wait)

	select {
	case <-ctx.Done():
	case err := <-served:
		log.Error("http server", "err", err)
	}
	stop() // a second signal ends the process at once
	log.Info("shutting down", "node", node.ID())
	return svc.Shutdown(log,
		svc.Step{Name: "http", Close: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, httpDrain)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return nil // payments still waiting are failed by the requester's Close
		}},
		svc.Step{Name: "requester", Close: req.Close},
		svc.Step{Name: "publisher", Close: pub.Close},
		svc.Step{Name: "mesh", Close: node.Close},
	)
}
