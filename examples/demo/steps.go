package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Test card numbers: valid by the validation service's rule (6 to 19 digits).
var cards = []string{
	"4111111111111111", "5500000000000004", "340000000000009",
	"6011000000000004", "3530111333300000", "4012888888881881",
	"5105105105105100", "378282246310005", "6011111111111117",
}

const (
	badCard     = "12ab34"
	waitingCard = "5555555555554444"
	callTimeout = 10 * time.Second
)

// roundRobin is step 1: nine payments, one at a time, and who validated each.
func (d *demo) roundRobin(ctx context.Context) error {
	d.step(1, "Nine payments: the requests are spread round-robin over the three validators")
	tally := map[string]int{}
	for _, card := range cards {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		res, p, err := d.pay(cctx, card)
		cancel()
		if err != nil {
			return err
		}
		if res.status != http.StatusOK || p.Status != "validated" {
			return fmt.Errorf("%w: GET /pay/%s answered %d %s", errUnexpected, card, res.status, res.body)
		}
		d.paid++
		tally[p.By]++
		d.say("GET /pay/%-19s %d %s by %s", card, res.status, p.Status, p.By)
	}
	names := make([]string, 0, len(tally))
	for name := range tally {
		names = append(names, name)
	}
	slices.Sort(names)
	var parts []string
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s %d", name, tally[name]))
	}
	d.note("tally: %s", strings.Join(parts, ", "))
	if len(tally) != 3 {
		return fmt.Errorf("%w: %d validators answered, want all 3", errUnexpected, len(tally))
	}
	return nil
}

// rejected is step 2: a card that is not valid.
func (d *demo) rejected(ctx context.Context) error {
	d.step(2, "A card that is not valid: the validator's coded error becomes a 422 with the reason")
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, p, err := d.pay(cctx, badCard)
	if err != nil {
		return err
	}
	d.say("GET /pay/%s %d %s", badCard, res.status, strings.TrimSpace(string(res.body)))
	if res.status != http.StatusUnprocessableEntity || p.Status != "rejected" || p.Error == "" {
		return fmt.Errorf("%w: GET /pay/%s answered %d %s", errUnexpected, badCard, res.status, res.body)
	}
	d.rejects++
	return nil
}

// waitForValidator is steps 3 and 4: with no validator a payment waits; it
// completes when one starts.
func (d *demo) waitForValidator(ctx context.Context) error {
	d.step(3, "Stop every validation service (SIGTERM): a payment now waits, as in cote")
	// One after the other: each drains and says goodbye while the rest of
	// the mesh is there to hear it.
	for _, p := range d.runningValidators() {
		took, err := p.stop()
		if err != nil {
			return fmt.Errorf("%w: %s: %v", errUnexpected, p.name, err)
		}
		d.say("%s drained and left the mesh in %.2fs (exit status 0)", p.name, took.Seconds())
	}
	if _, err := d.awaitHealth(ctx, func(h health) bool { return h.Validators == 0 }); err != nil {
		return err
	}
	d.say("payment-service sees 0 validation services")

	type answer struct {
		res response
		p   payment
		err error
	}
	answers := make(chan answer, 1)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sent := time.Now()
	go func() {
		res, p, err := d.pay(cctx, waitingCard)
		answers <- answer{res, p, err}
	}()
	d.say("GET /pay/%s sent; no validator exists, so the request is held", waitingCard)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for waited := time.Duration(0); waited < d.cfg.hold; {
		select {
		case a := <-answers:
			return fmt.Errorf("%w: the payment answered with no validator running: %d %s %v", errUnexpected, a.res.status, a.res.body, a.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			waited = time.Since(sent)
			d.say("  ... still waiting (%.1fs)", waited.Seconds())
		}
	}

	d.step(4, "Start a validation service: the waiting payment completes")
	v, err := d.startValidator()
	if err != nil {
		return err
	}
	d.say("%s starting, pid %d", v.name, v.cmd.Process.Pid)
	var a answer
	select {
	case a = <-answers:
	case <-ctx.Done():
		return ctx.Err()
	}
	if a.err != nil {
		return a.err
	}
	if a.res.status != http.StatusOK || a.p.Status != "validated" {
		return fmt.Errorf("%w: the waiting payment answered %d %s", errUnexpected, a.res.status, a.res.body)
	}
	d.paid++
	d.say("GET /pay/%s %d %s by %s", waitingCard, a.res.status, a.p.Status, a.p.By)
	d.note("the request waited %.1fs in all, and was answered %.2fs after %s was started",
		time.Since(sent).Seconds(), time.Since(v.started).Seconds(), v.name)
	return nil
}

// eventLine matches the monitor's lines: "15:04:05.000000 payment.completed card=...".
var eventLine = regexp.MustCompile(`(?m)^\S+ (payment\.[a-z]+) .*$`)

// monitorEvents is step 5: the monitor's output, read from its log.
func (d *demo) monitorEvents(ctx context.Context) error {
	d.step(5, "The payment-monitor subscribed to payment.*: it printed one line per event")
	want := d.paid + d.rejects
	var lines [][]string
	deadline := time.Now().Add(meshTimeout)
	for {
		b, err := os.ReadFile(d.monitorProc.logPath)
		if err != nil {
			return err
		}
		lines = eventLine.FindAllStringSubmatch(string(b), -1)
		if len(lines) >= want || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	count := map[string]int{}
	for _, l := range lines {
		d.note("%s", l[0])
		count[l[1]]++
	}
	d.say("the monitor saw %d payment.completed and %d payment.rejected events", count["payment.completed"], count["payment.rejected"])
	if count["payment.completed"] != d.paid || count["payment.rejected"] != d.rejects {
		return fmt.Errorf("%w: want %d payment.completed and %d payment.rejected events", errUnexpected, d.paid, d.rejects)
	}
	return nil
}

// keep leaves the services running, with a validator count back at three,
// until ctx ends (Ctrl-C).
func (d *demo) keep(ctx context.Context) error {
	for len(d.runningValidators()) < 3 {
		if _, err := d.startValidator(); err != nil {
			return err
		}
	}
	if _, err := d.awaitHealth(ctx, func(h health) bool { return h.Validators == 3 }); err != nil {
		return err
	}
	fmt.Fprintf(d.out, `
The services keep running (three validation services again). Try:
  curl -s %[1]s/pay/4111111111111111
  curl -s %[1]s/pay/12ab34
  curl -s %[1]s/healthz
Start another validation service by hand; it joins through the seed:
  WARREN_DISCOVERY=none WARREN_BIND=127.0.0.1:0 WARREN_SEEDS=%[2]s %[3]s
Logs (the monitor's events are in %[4]s): %[5]s
Press Ctrl-C to stop everything.
`, d.baseURL, d.seed, d.bin(validationBin), d.monitorProc.logPath, d.dir)
	<-ctx.Done()
	fmt.Fprintln(d.out)
	return nil
}
