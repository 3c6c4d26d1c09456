//go:build linux

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/mesh"
)

// Gossip ports: every host runs at most one responder or driver or
// publisher (on gossipPort) and one subscriber (on subPort).
const (
	gossipPort = 7946
	subPort    = 7947
)

// child is one process of the cluster.
type child struct {
	role string // driver, responder, publisher, subscriber
	name string // node name: drv, pub, r-h2, s-h2, ...
	slot string // subscribers: s1 or s2
	host *netns.Host
	proc *netns.Proc
	id   string // node ID
	in   io.WriteCloser
	seen int // stdout lines already parsed by poll
	// cumulative counters from the last progress line
	lastRetry, lastPlain, lastN int64
	lastBy                      map[string]int64
}

// cluster is the processes on an isolated network, and what the test has
// learnt from their output. It is used from the test goroutine only.
type cluster struct {
	t     *testing.T
	nw    *netns.Net
	dir   string
	mode  mode
	seeds string
	inst  int
	hosts map[string]*netns.Host

	drv, pub *child
	resps    []*child // r1, r2, r3, in order
	subs     map[string]*child
	children []*child

	drvSamples []dsample           // driver progress, as increments
	subSamples map[string][]sample // by slot, as increments
	members    []msg               // membership events seen by the driver
	reports    []msg               // driver and publisher reports
}

// dsample is what a driver answered between two progress lines.
type dsample struct {
	t            int64
	retry, plain int64
	by           map[string]int64
}

type sample struct {
	t int64
	n int64
}

// newCluster builds hosts h1..h6 (h6 stays empty until a host is lost and
// replaced) and starts the processes: responders on h2, h3, h4 (the one on
// h4 also has a CPU-bound handler), subscribers on h2 and h3, the publisher
// on h5 and the driver on h1. Discovery is by seeds only.
func newCluster(t *testing.T, m mode) *cluster {
	c := &cluster{t: t, nw: netns.New(t), dir: t.TempDir(), mode: m,
		hosts: map[string]*netns.Host{}, subs: map[string]*child{}, subSamples: map[string][]sample{}}
	var seeds []string
	for i := 1; i <= 6; i++ {
		h := c.nw.AddHost(t, fmt.Sprintf("h%d", i))
		c.hosts[h.Name] = h
		seeds = append(seeds, h.IP+":"+strconv.Itoa(gossipPort))
	}
	c.seeds = strings.Join(seeds, ",")
	for _, h := range []string{"h2", "h3", "h4"} {
		c.resps = append(c.resps, c.startResponder(c.hosts[h]))
	}
	c.startSubscriber(c.hosts["h2"], "s1")
	c.startSubscriber(c.hosts["h3"], "s2")
	c.pub = c.startPublisher()
	c.drv = c.startDriver()
	// Every responder answers before the suite starts.
	c.cmd(c.drv, "start warmup")
	start := nowMs()
	for _, r := range c.resps {
		if _, ok := c.waitServe(r.name, start, 20*time.Second); !ok {
			t.Fatalf("responder %s never answered", r.name)
		}
	}
	c.cmd(c.drv, "stop")
	c.waitReport(c.drv, "warmup", 30*time.Second)
	return c
}

// baseEnv is the part of the test's environment a child inherits: enough to
// run (and to race-detect or collect coverage), and no WARREN_* variable.
func (c *cluster) baseEnv(role string) []string {
	hostNS, err := netnsID()
	if err != nil {
		c.t.Fatal(err)
	}
	env := []string{envRole + "=" + role, envHostNS + "=" + hostNS}
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GORACE", "GOCOVERDIR", "GOTRACEBACK", "GOMAXPROCS"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// start runs a child and waits for its ready line.
func (c *cluster) start(role, name string, h *netns.Host, port int, vars map[string]string, stdin bool) *child {
	c.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	c.inst++
	all := map[string]string{
		mesh.EnvName:      name,
		mesh.EnvBind:      h.IP + ":" + strconv.Itoa(port),
		mesh.EnvDiscovery: "none",
		mesh.EnvSeeds:     c.seeds,
		mesh.EnvLog:       "info",
		envDir:            c.dir,
		envInst:           strconv.Itoa(c.inst),
		envLife:           strconv.Itoa(int(c.mode.life.Seconds())),
		envPace:           strconv.Itoa(c.mode.pace),
	}
	for k, v := range vars {
		all[k] = v
	}
	env := c.baseEnv(role)
	for k, v := range all {
		env = append(env, k+"="+v)
	}
	// Not t.Context(): it ends before cleanup, which stops children gracefully.
	cmd := h.Command(context.Background(), exe)
	cmd.Env = env
	ch := &child{role: role, name: name, host: h, lastBy: map[string]int64{}}
	if stdin {
		w, err := cmd.StdinPipe()
		if err != nil {
			c.t.Fatal(err)
		}
		ch.in = w
		c.t.Cleanup(func() { w.Close() })
	}
	ch.proc = netns.StartProc(c.t, role+" "+name, cmd)
	line := ch.proc.WaitLine(c.t, 40*time.Second, func(l string) bool {
		m, ok := parse(l)
		return ok && (m.E == "ready" || m.E == "error")
	})
	m, _ := parse(line)
	if m.E == "error" {
		c.t.Fatalf("%s %s did not start: %s", role, name, m.Err)
	}
	ch.id = m.ID
	c.children = append(c.children, ch)
	return ch
}

func (c *cluster) startResponder(h *netns.Host) *child {
	vars := map[string]string{}
	if h.Name == "h4" {
		vars[envBusy] = "200"
	}
	return c.start("responder", "r-"+h.Name, h, gossipPort, vars, false)
}

func (c *cluster) startSubscriber(h *netns.Host, slot string) *child {
	s := c.start("subscriber", "s-"+h.Name, h, subPort, map[string]string{envSlot: slot}, false)
	s.slot = slot
	c.subs[slot] = s
	return s
}

func (c *cluster) startPublisher() *child {
	return c.start("publisher", "pub", c.hosts["h5"], gossipPort, map[string]string{envSubs: "2"}, true)
}

func (c *cluster) startDriver() *child {
	return c.start("driver", "drv", c.hosts["h1"], gossipPort, map[string]string{envResps: "3"}, true)
}

func parse(line string) (msg, bool) {
	var m msg
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &m) != nil {
		return m, false
	}
	return m, true
}

func (c *cluster) cmd(ch *child, format string, args ...any) {
	c.t.Helper()
	if _, err := fmt.Fprintf(ch.in, format+"\n", args...); err != nil {
		c.t.Fatalf("command to %s: %v\n%s", ch.name, err, ch.proc.Report(ch.proc.Err()))
	}
}

// poll parses the children's new output lines.
func (c *cluster) poll() {
	for _, ch := range c.children {
		lines := ch.proc.Lines()
		for ; ch.seen < len(lines); ch.seen++ {
			m, ok := parse(lines[ch.seen])
			if !ok {
				continue
			}
			switch {
			case m.E == "progress" && ch.role == "driver":
				s := dsample{t: m.T, retry: m.Retry - ch.lastRetry, plain: m.Plain - ch.lastPlain, by: map[string]int64{}}
				for k, v := range m.By {
					if d := v - ch.lastBy[k]; d > 0 {
						s.by[k] = d
					}
				}
				ch.lastRetry, ch.lastPlain, ch.lastBy = m.Retry, m.Plain, m.By
				c.drvSamples = append(c.drvSamples, s)
			case m.E == "progress" && ch.role == "subscriber":
				c.subSamples[ch.slot] = append(c.subSamples[ch.slot], sample{t: m.T, n: m.N - ch.lastN})
				ch.lastN = m.N
			case m.E == "member":
				c.members = append(c.members, m)
			case m.E == "report":
				m.Name, m.from = ch.name, ch
				c.reports = append(c.reports, m)
			case m.E == "error":
				c.t.Errorf("%s %s: %s", ch.role, ch.name, m.Err)
			}
		}
	}
}

// wait polls until cond holds or timeout passes; it reports whether cond held.
func (c *cluster) wait(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		c.poll()
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *cluster) sleep(d time.Duration) { c.wait(d, func() bool { return false }) }

// waitReport waits for ch's report of phase. A restarted process has its
// predecessor's name, and both report the phase of the restart: only ch's
// own report shows that ch's calls have all ended.
func (c *cluster) waitReport(ch *child, phase string, timeout time.Duration) msg {
	c.t.Helper()
	var got msg
	if !c.wait(timeout, func() bool {
		for _, r := range c.reports {
			if r.from == ch && r.Phase == phase {
				got = r
				return true
			}
		}
		return false
	}) {
		c.t.Fatalf("no report of phase %s from %s\n%s", phase, ch.name, ch.proc.Report(ch.proc.Err()))
	}
	return got
}

// waitServe waits until responder name answers a request after time after
// (unix ms) and returns when it did.
func (c *cluster) waitServe(name string, after int64, timeout time.Duration) (int64, bool) {
	var at int64
	ok := c.wait(timeout, func() bool {
		var found bool
		at, found = c.firstServe(name, after)
		return found
	})
	return at, ok
}

// waitMember waits for a membership event of type typ about node name,
// after time after, and returns when it happened.
func (c *cluster) waitMember(name, typ string, after int64, timeout time.Duration) (int64, bool) {
	var at int64
	ok := c.wait(timeout, func() bool {
		for _, m := range c.members {
			if m.Name == name && m.Type == typ && m.T >= after {
				at = m.T
				return true
			}
		}
		return false
	})
	return at, ok
}

// stopChild stops a child gracefully (SIGTERM) and checks that it closed
// cleanly.
func (c *cluster) stopChild(ch *child, grace time.Duration) {
	c.t.Helper()
	if err := ch.proc.Stop(grace); err != nil {
		c.t.Errorf("%s %s did not stop cleanly: %v\n%s", ch.role, ch.name, err, ch.proc.Report(err))
	}
	c.poll()
	for _, l := range ch.proc.Lines() {
		if m, ok := parse(l); ok && m.E == "closed" && m.Err != "" {
			c.t.Errorf("%s %s: close: %s", ch.role, ch.name, m.Err)
		}
	}
}

// replaceResponder swaps old for nw in the responder list.
func (c *cluster) replaceResponder(old, nw *child) {
	i := slices.Index(c.resps, old)
	c.resps[i] = nw
}

// ---- series ----

func (c *cluster) sortedSamples() []dsample {
	s := slices.Clone(c.drvSamples)
	slices.SortStableFunc(s, func(a, b dsample) int { return int(a.t - b.t) })
	return s
}

// rate is the retrying requester's answers per second in (from, to].
func (c *cluster) rate(from, to int64) float64 {
	var n int64
	for _, s := range c.drvSamples {
		if s.t > from && s.t <= to {
			n += s.retry
		}
	}
	if to <= from {
		return 0
	}
	return float64(n) * 1000 / float64(to-from)
}

func (c *cluster) firstServe(name string, after int64) (int64, bool) {
	best, found := int64(0), false
	for _, s := range c.drvSamples {
		if s.t > after && s.by[name] > 0 && (!found || s.t < best) {
			best, found = s.t, true
		}
	}
	return best, found
}

// steadyReceive returns when the subscriber in slot started receiving after
// after and then kept receiving in every progress sample for settle: a
// subscriber that hears one event and then loses its publisher again (a
// membership flap after a partition heals) has not recovered yet.
func (c *cluster) steadyReceive(slot string, after int64, settle time.Duration) (int64, bool) {
	var from int64 // start of the current run of receiving samples; 0: none
	for _, s := range c.subSamples[slot] {
		if s.t <= after {
			continue
		}
		switch {
		case s.n == 0:
			from = 0
		case from == 0:
			from = s.t
		}
		if from != 0 && s.t-from >= settle.Milliseconds() {
			return from, true
		}
	}
	return 0, false
}

// throughputBack returns the start of the first half second after after in
// which the retrying requester answered at least half its baseline rate.
func (c *cluster) throughputBack(after int64, baseline float64) (int64, bool) {
	ss := c.sortedSamples()
	if len(ss) == 0 {
		return 0, false
	}
	last := ss[len(ss)-1].t
	for _, s := range ss {
		if s.t < after {
			continue
		}
		if s.t+500 > last {
			return 0, false
		}
		if c.rate(s.t-progressTick.Milliseconds(), s.t+500) >= baseline/2 {
			return max(s.t-progressTick.Milliseconds(), after), true
		}
	}
	return 0, false
}

// stall is the longest time in [from, to] during which the retrying
// requester got no answer.
func (c *cluster) stall(from, to int64) time.Duration {
	last, worst := from, int64(0)
	for _, s := range c.sortedSamples() {
		if s.t < from || s.t > to || s.retry == 0 {
			continue
		}
		// The answers came at some point in the tick before s.t.
		worst = max(worst, s.t-progressTick.Milliseconds()-last)
		last = s.t
	}
	worst = max(worst, to-last)
	return time.Duration(worst) * time.Millisecond
}
