// Command demo is warren's one-command tour:
//
//	go run ./examples/demo
//
// It builds the example services, starts a payment service, three validation
// services and a payment monitor as separate processes on this machine,
// joined by loopback seeds with multicast off (so it works on any machine),
// and narrates what happens:
//
//  1. nine payments are spread round-robin over the three validators;
//  2. a card that is not valid is rejected with the reason;
//  3. every validator is stopped, and a payment waits;
//  4. a validator is started, and the waiting payment completes;
//  5. the monitor received every payment event.
//
// It stops every process it started, also on Ctrl-C or failure. With -keep
// the services keep running after the tour, with curl commands to try,
// until Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var cfg config
	flag.BoolVar(&cfg.keep, "keep", false, "keep the services running after the tour, until Ctrl-C")
	flag.DurationVar(&cfg.hold, "hold", 2*time.Second, "how long step 3 shows a payment waiting")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Stdout, cfg)
	switch {
	case err == nil:
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "demo: interrupted; every process it started is stopped")
		os.Exit(130)
	default:
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type config struct {
	keep bool          // keep the services running until ctx ends
	hold time.Duration // how long step 3 lets the payment wait
}

// run plays the whole demo, writing the transcript to out. It stops every
// process it started before it returns, whatever happens.
func run(ctx context.Context, out io.Writer, cfg config) (err error) {
	d, err := newDemo(out, cfg)
	if err != nil {
		return err
	}
	defer func() {
		failed := err != nil && !errors.Is(err, context.Canceled)
		if failed {
			d.showLogs()
		}
		d.cleanup(failed)
	}()
	fmt.Fprintln(out, "warren demo: a payment service, three validation services and a payment monitor,")
	fmt.Fprintln(out, "each a separate process on this machine, joined by loopback seeds (mDNS off).")
	fmt.Fprintln(out)
	for _, step := range []func(context.Context) error{
		d.build, d.startAll, d.roundRobin, d.rejected, d.waitForValidator, d.monitorEvents,
	} {
		if err := step(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
	fmt.Fprintf(out, "\nEvery step done in %.1fs.\n", time.Since(d.start).Seconds())
	if cfg.keep {
		return d.keep(ctx)
	}
	return nil
}
