//go:build linux

package faults

import (
	"cmp"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netns"
)

// mode sets how long faults are held and how heavy the load is.
type mode struct {
	name       string
	pace       int           // ms between requests per worker, and between events
	warm       time.Duration // load before the fault, for the baseline rate
	tail       time.Duration // load after recovery
	hold       time.Duration // a freeze or partition, beyond its detection
	busy       time.Duration // how long the responder is kept CPU-bound
	steady     time.Duration // the fault-free phase
	recoverMax time.Duration // slowest acceptable recovery
	life       time.Duration // a child's maximum lifetime
}

func pickMode() mode {
	if os.Getenv(envLong) == "1" && !testing.Short() {
		return mode{name: "long", pace: 10, warm: 3 * time.Second, tail: 3 * time.Second, hold: 15 * time.Second,
			busy: 30 * time.Second, steady: 10 * time.Second, recoverMax: 10 * time.Second, life: 20 * time.Minute}
	}
	return mode{name: "short", pace: 20, warm: 1500 * time.Millisecond, tail: time.Second, hold: time.Second,
		busy: 8 * time.Second, steady: 2 * time.Second, recoverMax: 10 * time.Second, life: 6 * time.Minute}
}

// phase is one fault under load.
type phase struct {
	name     string
	faultAt  int64    // unix ms: the fault struck
	end      int64    // unix ms: the fault ended (healed, resumed, replaced)
	backResp []string // responders that must answer again after end
	backSubs []string // subscriber slots that must receive again after end
	notes    []string
	after    func()        // runs once recovered, to restore the cluster
	limit    time.Duration // slowest acceptable recovery, when not mode.recoverMax
}

func (p *phase) note(format string, args ...any) {
	p.notes = append(p.notes, fmt.Sprintf(format, args...))
}

// TestFaults runs every fault in turn on one cluster under steady load and
// checks the promises: nothing lost, nothing answered twice, every failure
// a typed error, no failure at all in graceful restarts, no event lost where
// no subscriber was touched, and recovery within seconds.
func TestFaults(t *testing.T) {
	m := pickMode()
	began := time.Now()
	c := newCluster(t, m)
	t.Logf("cluster of %d processes ready in %s (%s mode)", len(c.children), time.Since(began).Round(time.Millisecond), m.name)

	var rows []row
	run := func(name string, inject func(*phase)) row {
		r := c.runPhase(name, inject)
		rows = append(rows, r)
		t.Logf("%-22s sent %d answered %d failed %d/%d retried %d lost %d twice %d | events %d delivered %d dropped %d | stall %s recovery %s (%s)",
			r.fault, r.retry.sent+r.plain.sent, r.retry.answered+r.plain.answered, r.retry.failed, r.plain.failed,
			r.retried, r.retry.lost+r.plain.lost, r.retry.twice+r.plain.twice, r.published, r.delivered, r.dropped,
			dur(r.stall), dur(r.recovery), time.Since(began).Round(time.Second))
		for _, d := range r.droppedBy {
			t.Logf("%-22s %s", "", d)
		}
		return r
	}
	// Which checks apply to which fault.
	type expect struct {
		plainOK  bool // the requester without retry fails nothing
		eventsOK bool // no subscriber is touched: no event dropped
	}
	expects := map[string]expect{}
	add := func(name string, e expect, inject func(*phase)) {
		expects[name] = e
		run(name, inject)
	}

	add("no fault", expect{plainOK: true, eventsOK: true}, func(p *phase) {
		c.sleep(m.steady)
	})
	add("responder SIGKILL", expect{eventsOK: true}, func(p *phase) { c.faultKill(p, c.resps[0]) })
	add("responder SIGSTOP/SIGCONT", expect{eventsOK: true}, func(p *phase) { c.faultFreeze(p, c.resps[2]) })
	add("partition and heal", expect{}, func(p *phase) { c.faultPartition(p, c.hosts["h2"]) })
	add("rolling restart (drain)", expect{plainOK: true, eventsOK: true}, c.faultRolling)
	add("busy responder", expect{plainOK: true, eventsOK: true}, func(p *phase) { c.faultBusy(p, c.resps[2]) })
	add("requester restart", expect{plainOK: true, eventsOK: true}, c.faultRestartDriver)
	add("publisher restart", expect{plainOK: true, eventsOK: true}, c.faultRestartPublisher)
	add("host lost, replaced", expect{}, func(p *phase) { c.faultHostLost(p, c.hosts["h3"], c.hosts["h6"]) })

	table := markdown(rows, m)
	t.Logf("fault table (%s):\n%s", time.Since(began).Round(time.Second), table)
	if path := os.Getenv(envTable); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Errorf("writing %s: %v", path, err)
		}
	}
	for _, r := range rows {
		e := expects[r.fault]
		check := func(ok bool, format string, args ...any) {
			if !ok {
				t.Errorf("%s: %s", r.fault, fmt.Sprintf(format, args...))
			}
		}
		for _, rr := range []struct {
			name string
			row  reqRow
		}{{"with retry", r.retry}, {"without retry", r.plain}} {
			check(rr.row.sent > 0, "%s: no request sent", rr.name)
			check(rr.row.lost == 0, "%s: %d requests lost", rr.name, rr.row.lost)
			check(rr.row.twice == 0, "%s: %d requests answered twice or with another's reply", rr.name, rr.row.twice)
			check(rr.row.unclear == 0, "%s: %d failures without a typed error", rr.name, rr.row.unclear)
			check(rr.row.phantom == 0, "%s: %d answers no responder recorded", rr.name, rr.row.phantom)
		}
		check(r.retry.failed == 0, "with retry: %d failed: %v", r.retry.failed, r.retry.classes)
		check(r.plain.reexec == 0, "without retry: %d requests ran twice", r.plain.reexec)
		check(uint64(r.retry.reexec) <= r.retried, "with retry: %d ran twice but only %d were retried", r.retry.reexec, r.retried)
		check(!e.plainOK || r.plain.failed == 0, "without retry: %d failed: %v", r.plain.failed, r.plain.classes)
		check(r.published > 0, "no event published")
		check(r.dupEvents == 0, "%d events received twice", r.dupEvents)
		check(r.pubErrors == 0 || !e.eventsOK, "%d Publish errors", r.pubErrors)
		check(r.dropped == 0 || !e.eventsOK, "%d events dropped: %s", r.dropped, strings.Join(r.droppedBy, "; "))
		check(r.recovered && r.recovery <= r.limit, "recovery %s (recovered: %v), want at most %s", dur(r.recovery), r.recovered, r.limit)
	}
}

// runPhase runs the load, injects a fault once the baseline is measured,
// waits for recovery, then stops the load and joins the records.
func (c *cluster) runPhase(name string, inject func(*phase)) row {
	c.t.Helper()
	p := &phase{name: strings.ReplaceAll(name, " ", "_")}
	c.cmd(c.pub, "start %s", p.name)
	c.cmd(c.drv, "start %s", p.name)
	start := nowMs()
	c.sleep(c.mode.warm)
	p.faultAt = nowMs()
	baseline := c.rate(start+300, p.faultAt)
	inject(p)
	if p.end == 0 {
		p.end = nowMs()
	}
	r := row{fault: name}
	r.recovered = c.wait(30*time.Second, func() bool {
		at, ok := c.throughputBack(p.end, baseline)
		if !ok {
			return false
		}
		for _, name := range p.backResp {
			t, ok := c.firstServe(name, p.end)
			if !ok {
				return false
			}
			at = max(at, t)
		}
		for _, slot := range p.backSubs {
			t, ok := c.steadyReceive(slot, p.end, time.Second)
			if !ok {
				return false
			}
			at = max(at, t)
		}
		r.recovery = time.Duration(max(at-p.end, 0)) * time.Millisecond
		return true
	})
	if p.after != nil {
		p.after()
	}
	c.sleep(c.mode.tail)
	stopAt := nowMs()
	c.cmd(c.drv, "stop")
	c.cmd(c.pub, "stop")
	drvRep := c.waitReport(c.drv, p.name, reqTimeout+15*time.Second)
	c.waitReport(c.pub, p.name, 15*time.Second)
	r.stall = c.stall(p.faultAt, stopAt)
	r.retry, r.plain = c.requests(p.name)
	c.events(p.name, &r)
	for _, rep := range c.reports {
		if rep.Phase == p.name && rep.Name == "drv" {
			r.retried += rep.Stats["retry.retried"] + rep.Stats["plain.retried"]
		}
	}
	r.notes = p.notes
	r.limit = cmp.Or(p.limit, c.mode.recoverMax)
	if errs := drvRep.Errors; len(errs) > 0 {
		c.t.Logf("%s: first errors: %s", name, strings.Join(errs, " | "))
	}
	return r
}

// faultKill: SIGKILL a responder (its sockets close: peers see it at once),
// then start it again once traffic has recovered.
func (c *cluster) faultKill(p *phase, r *child) {
	if err := r.proc.Kill(); err != nil {
		c.t.Fatal(err)
	}
	p.after = func() {
		nw := c.startResponder(r.host)
		c.replaceResponder(r, nw)
		if _, ok := c.waitServe(nw.name, nowMs(), 20*time.Second); !ok {
			c.t.Errorf("restarted responder %s never answered", nw.name)
		}
	}
}

// faultFreeze: SIGSTOP a responder (no FIN: only failure detection sees it),
// hold it past its detection, then SIGCONT; it must come back.
func (c *cluster) faultFreeze(p *phase, r *child) {
	if err := r.proc.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatal(err)
	}
	if at, ok := c.waitMember(r.name, "failed", p.faultAt, 30*time.Second); ok {
		p.note("declared dead %s after SIGSTOP", dur(time.Duration(at-p.faultAt)*time.Millisecond))
	} else {
		p.note("not declared dead within 30 s")
	}
	c.sleep(c.mode.hold)
	if err := r.proc.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatal(err)
	}
	p.end = nowMs()
	p.backResp = []string{r.name}
}

// faultPartition: take a host's link down (its responder and subscriber are
// cut off) past detection, then heal it; both must come back.
func (c *cluster) faultPartition(p *phase, h *netns.Host) {
	if err := h.SetLink(false); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { h.SetLink(true) })
	name := "r-" + h.Name
	if at, ok := c.waitMember(name, "failed", p.faultAt, 30*time.Second); ok {
		p.note("cut-off host declared dead %s after the link went down", dur(time.Duration(at-p.faultAt)*time.Millisecond))
	} else {
		p.note("cut-off host not declared dead within 30 s")
	}
	c.sleep(c.mode.hold)
	if err := h.SetLink(true); err != nil {
		c.t.Fatal(err)
	}
	p.end = nowMs()
	if at, ok := c.waitMember(name, "joined", p.end, 30*time.Second); ok {
		p.note("rejoined %s after healing", dur(time.Duration(at-p.end)*time.Millisecond))
	}
	p.backResp = []string{name}
	for slot, s := range c.subs {
		if s.host == h {
			p.backSubs = append(p.backSubs, slot)
		}
	}
}

// faultRolling: restart the three responders one at a time with SIGTERM
// (each drains), each serving again before the next goes.
func (c *cluster) faultRolling(p *phase) {
	for _, r := range append([]*child(nil), c.resps...) {
		c.stopChild(r, closeTimeout+5*time.Second)
		nw := c.startResponder(r.host)
		c.replaceResponder(r, nw)
		if _, ok := c.waitServe(nw.name, nowMs(), 20*time.Second); !ok {
			c.t.Errorf("restarted responder %s never answered", nw.name)
		}
		p.backResp = append(p.backResp, nw.name)
	}
	p.end = nowMs()
	p.note("3 responders restarted one after the other in %s", dur(time.Duration(p.end-p.faultAt)*time.Millisecond))
}

// faultBusy: keep a responder CPU-bound (200 ms busy-loop handlers, two at
// a time) while it keeps answering; it must not be declared dead.
func (c *cluster) faultBusy(p *phase, r *child) {
	c.cmd(c.drv, "busy 2")
	c.sleep(c.mode.busy)
	c.cmd(c.drv, "busy 0")
	p.end = nowMs()
	for _, m := range c.members {
		if m.Name == r.name && m.Type == "failed" && m.T >= p.faultAt {
			c.t.Errorf("busy responder %s declared dead at +%s", r.name, dur(time.Duration(m.T-p.faultAt)*time.Millisecond))
		}
	}
	if _, ok := c.firstServe(r.name, p.end-2000); !ok {
		c.t.Errorf("busy responder %s stopped answering", r.name)
	}
	p.note("%s ran two 200 ms CPU-bound handlers at a time for %s and was not declared dead", r.name, dur(c.mode.busy))
}

// faultRestartDriver: the requesters' process is stopped gracefully (it
// finishes what it sent) and started again as a new node.
func (c *cluster) faultRestartDriver(p *phase) {
	old := c.drv
	c.stopChild(old, reqTimeout+10*time.Second)
	c.drv = c.startDriver()
	c.cmd(c.drv, "start %s", p.name)
	p.end = nowMs()
	p.note("new requester node ready %s after the old one began to stop", dur(time.Duration(p.end-p.faultAt)*time.Millisecond))
}

// faultRestartPublisher: the publisher's process is stopped gracefully and
// started again as a new node; the subscribers must hear from it.
func (c *cluster) faultRestartPublisher(p *phase) {
	c.stopChild(c.pub, 15*time.Second)
	c.pub = c.startPublisher()
	c.cmd(c.pub, "start %s", p.name)
	p.end = nowMs()
	p.backSubs = []string{"s1", "s2"}
}

// faultHostLost: a host vanishes (link down first, so no FIN leaves it, then
// its processes die); a new host with new nodes replaces it a second later.
// The loss is instantaneous, so recovery counts from the moment the host
// vanished; only failure detection can see it (memberlist's LAN defaults
// take 5 to 10 s, more when suspicion is not confirmed quickly), so the
// limit is that long plus the usual one.
func (c *cluster) faultHostLost(p *phase, lost, spare *netns.Host) {
	p.end, p.limit = p.faultAt, c.mode.recoverMax+5*time.Second
	if err := lost.SetLink(false); err != nil {
		c.t.Fatal(err)
	}
	var slots []string
	for _, ch := range c.children {
		if ch.host == lost && running(ch) {
			ch.proc.Kill()
			if ch.role == "subscriber" {
				slots = append(slots, ch.slot)
			}
		}
	}
	c.sleep(time.Second) // the replacement boots
	var old *child
	for _, r := range c.resps {
		if r.host == lost {
			old = r
		}
	}
	nw := c.startResponder(spare)
	c.replaceResponder(old, nw)
	for _, slot := range slots {
		c.startSubscriber(spare, slot)
	}
	p.note("replacement ready %s after the loss", dur(time.Duration(nowMs()-p.faultAt)*time.Millisecond))
	p.backResp = []string{nw.name}
	p.backSubs = slots
	if at, ok := c.waitMember(old.name, "failed", p.faultAt, 30*time.Second); ok {
		detect := time.Duration(at-p.faultAt) * time.Millisecond
		p.note("lost host declared dead %s after it vanished", dur(detect))
		p.limit = max(p.limit, detect+c.mode.recoverMax)
	}
}

func running(ch *child) bool {
	select {
	case <-ch.proc.Done():
		return false
	default:
		return true
	}
}
