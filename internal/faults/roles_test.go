//go:build linux

package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/publisher"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
	"github.com/warrenmesh/warren/subscriber"
)

// The roles. Records (files, one line per fact, see record):
//
//	driver:     S <phase> <requester> <id>            a request is about to be sent
//	            A <phase> <requester> <id> <by> <got> answered by <by>, reply for id <got>
//	            F <phase> <requester> <id> <class>    failed; class names the typed error
//	responder:  <id>                                  executed (recorded before replying)
//	publisher:  P <phase> <seq>                       published
//	            E <phase> <seq> <class>               Publish failed
//	subscriber: <seq>                                 received

type reply struct {
	ID int64  `json:"id"`
	By string `json:"by"`
}

type tick struct {
	Seq   int64  `json:"seq"`
	Phase string `json:"phase"`
}

const topic = "load.tick"

// commands feeds stdin lines to a channel, closed at EOF.
func commands() <-chan string {
	ch := make(chan string)
	go func() {
		defer close(ch)
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			ch <- strings.TrimSpace(in.Text())
		}
	}()
	return ch
}

func terminated() <-chan os.Signal {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	return sigs
}

// progress emits fn's line every progressTick until stop is closed.
func progress(o *out, stop <-chan struct{}, fn func() msg) {
	t := time.NewTicker(progressTick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			m := fn()
			m.E, m.T = "progress", nowMs()
			o.emit(m)
		}
	}
}

func fail(o *out, err error) int {
	o.emit(msg{E: "error", Err: err.Error()})
	return 1
}

// ---- driver: two requesters under steady load ----

type load struct {
	name     string
	r        *requester.Requester
	answered atomic.Int64
	before   requester.Stats
}

type driver struct {
	o       *out
	rec     *record
	base    int64
	next    atomic.Int64
	pace    time.Duration
	retry   *load
	plain   *load
	byMu    sync.Mutex
	by      map[string]int64
	errMu   sync.Mutex
	errs    []string
	phase   string
	ctx     context.Context
	cancel  context.CancelFunc
	workers sync.WaitGroup
	running bool

	busyCancel  context.CancelFunc
	busyWorkers sync.WaitGroup
}

func runDriver() int {
	o := newOut()
	sigs := terminated()
	n, err := childNode()
	if err != nil {
		return fail(o, err)
	}
	rec, err := openRecord(recordPath("driver"))
	if err != nil {
		return fail(o, err)
	}
	d := &driver{o: o, rec: rec, base: int64(envInt(envInst, 0)) * 1_000_000_000,
		pace: time.Duration(envInt(envPace, 20)) * time.Millisecond, by: map[string]int64{}}
	for _, l := range []struct {
		to   **load
		name string
		opts []requester.Option
	}{{&d.retry, "retry", []requester.Option{requester.WithRetry(3)}}, {&d.plain, "plain", nil}} {
		r, err := requester.New(l.name, append(l.opts, requester.WithMesh(n), requester.WithTimeout(reqTimeout))...)
		if err != nil {
			return fail(o, err)
		}
		*l.to = &load{name: l.name, r: r}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.Watch(ctx, func(e mesh.Event) {
		if e.Type == mesh.NodeJoined || e.Type == mesh.NodeLeft || e.Type == mesh.NodeFailed {
			o.emit(msg{E: "member", T: nowMs(), ID: e.Node, Name: e.Member.Name, Type: e.Type.String()})
		}
	})
	if err := awaitKind(n, mesh.KindResponder, "work", envInt(envResps, 0)); err != nil {
		return fail(o, fmt.Errorf("responders not visible: %w", err))
	}
	o.emit(msg{E: "ready", T: nowMs(), ID: n.ID()})
	stopProgress := make(chan struct{})
	go progress(o, stopProgress, func() msg {
		d.byMu.Lock()
		by := make(map[string]int64, len(d.by))
		for k, v := range d.by {
			by[k] = v
		}
		d.byMu.Unlock()
		return msg{Retry: d.retry.answered.Load(), Plain: d.plain.answered.Load(), By: by}
	})
	cmds := commands()
loop:
	for {
		select {
		case <-sigs:
			break loop
		case c, ok := <-cmds:
			if !ok {
				break loop
			}
			var phase string
			var busy int
			switch {
			case strings.HasPrefix(c, "start "):
				if _, err := fmt.Sscanf(c, "start %s", &phase); err != nil || d.running {
					o.emit(msg{E: "error", Err: fmt.Sprintf("bad command %q", c)})
					continue
				}
				d.start(phase)
			case strings.HasPrefix(c, "busy "):
				if _, err := fmt.Sscanf(c, "busy %d", &busy); err != nil || !d.running {
					o.emit(msg{E: "error", Err: fmt.Sprintf("bad command %q", c)})
					continue
				}
				d.setBusy(busy)
			case c == "stop":
				d.stop()
			default:
				o.emit(msg{E: "error", Err: fmt.Sprintf("bad command %q", c)})
			}
		}
	}
	d.stop()
	close(stopProgress)
	cctx, ccancel := context.WithTimeout(context.Background(), closeTimeout)
	defer ccancel()
	d.retry.r.Close(cctx)
	d.plain.r.Close(cctx)
	err = closeNode(n)
	o.emit(msg{E: "closed", T: nowMs(), Err: errString(err)})
	return 0
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// start runs the load of a phase: four workers on the retrying requester,
// two on the other, each pausing pace between requests.
func (d *driver) start(phase string) {
	ctx, cancel := context.WithCancel(context.Background())
	d.phase, d.ctx, d.cancel, d.running = phase, ctx, cancel, true
	d.errs = nil
	d.retry.before, d.plain.before = d.retry.r.Stats(), d.plain.r.Stats()
	d.spawn(ctx, &d.workers, 4, d.retry, "work")
	d.spawn(ctx, &d.workers, 2, d.plain, "work")
}

func (d *driver) spawn(ctx context.Context, wg *sync.WaitGroup, k int, l *load, typ string) {
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.work(ctx, l, typ)
		}()
	}
}

// setBusy replaces the busy workers, which send CPU-bound "busy" requests
// through the requester without retry, by k new ones (none when k is 0).
func (d *driver) setBusy(k int) {
	if d.busyCancel != nil {
		d.busyCancel()
		d.busyWorkers.Wait()
		d.busyCancel = nil
	}
	if k > 0 {
		var ctx context.Context
		ctx, d.busyCancel = context.WithCancel(d.ctx)
		d.spawn(ctx, &d.busyWorkers, k, d.plain, "busy")
	}
}

// stop ends the phase: no new requests, every one in flight finishes (each
// is bounded by reqTimeout), then one report line.
func (d *driver) stop() {
	if !d.running {
		return
	}
	d.setBusy(0)
	d.cancel()
	d.workers.Wait()
	d.running = false
	stats := map[string]uint64{}
	for _, l := range []*load{d.retry, d.plain} {
		s := l.r.Stats()
		stats[l.name+".retried"] = s.Retried - l.before.Retried
		stats[l.name+".rejected"] = s.Rejected - l.before.Rejected
		stats[l.name+".timedout"] = s.TimedOut - l.before.TimedOut
	}
	d.errMu.Lock()
	errs := d.errs
	d.errMu.Unlock()
	d.o.emit(msg{E: "report", T: nowMs(), Phase: d.phase, Stats: stats, Errors: errs})
}

func (d *driver) work(ctx context.Context, l *load, typ string) {
	for ctx.Err() == nil {
		id := d.base + d.next.Add(1)
		d.rec.line("S %s %s %d", d.phase, l.name, id)
		// Not ctx: a stopping phase lets calls in flight finish.
		rep, err := requester.Call[reply](context.Background(), l.r, typ, id)
		if err != nil {
			class := classify(err)
			d.rec.line("F %s %s %d %s", d.phase, l.name, id, class)
			d.errMu.Lock()
			if len(d.errs) < 8 {
				d.errs = append(d.errs, l.name+": "+err.Error())
			}
			d.errMu.Unlock()
		} else {
			d.rec.line("A %s %s %d %s %d", d.phase, l.name, id, rep.By, rep.ID)
			l.answered.Add(1)
			d.byMu.Lock()
			d.by[rep.By]++
			d.byMu.Unlock()
		}
		t := time.NewTimer(d.pace)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// classify names the typed error err carries; "unclear" when none.
func classify(err error) string {
	var remote *requester.RemoteError
	switch {
	case errors.Is(err, requester.ErrResponderLost):
		return "responder-lost"
	case errors.Is(err, requester.ErrTimeout):
		return "timeout"
	case errors.Is(err, requester.ErrNoHandler):
		return "no-handler"
	case errors.Is(err, requester.ErrQueueFull):
		return "queue-full"
	case errors.Is(err, requester.ErrClosed):
		return "closed"
	case errors.Is(err, requester.ErrDecode):
		return "decode"
	case errors.As(err, &remote):
		return "remote-" + remote.Code
	}
	return "unclear"
}

// ---- responder ----

func runResponder() int {
	o := newOut()
	sigs := terminated()
	n, err := childNode()
	if err != nil {
		return fail(o, err)
	}
	rec, err := openRecord(recordPath("resp-" + n.Name()))
	if err != nil {
		return fail(o, err)
	}
	r, err := responder.New("faults", responder.WithMesh(n))
	if err != nil {
		return fail(o, err)
	}
	responder.Handle(r, "work", func(ctx context.Context, id int64) (reply, error) {
		rec.line("%d", id)
		time.Sleep(2 * time.Millisecond) // so that requests are in flight when a fault strikes
		return reply{ID: id, By: n.Name()}, nil
	})
	if ms := envInt(envBusy, 0); ms > 0 {
		responder.Handle(r, "busy", func(ctx context.Context, id int64) (reply, error) {
			rec.line("%d", id)
			spin(time.Duration(ms) * time.Millisecond) // ignores ctx, as CPU-bound code does
			return reply{ID: id, By: n.Name()}, nil
		})
	}
	o.emit(msg{E: "ready", T: nowMs(), ID: n.ID()})
	<-sigs
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err = errors.Join(r.Close(ctx), closeNode(n)) // drains: in-flight requests finish
	o.emit(msg{E: "closed", T: nowMs(), Err: errString(err)})
	return 0
}

var spinSink atomic.Uint64

// spin keeps a CPU busy for d.
func spin(d time.Duration) {
	end := time.Now().Add(d)
	x := uint64(1)
	for time.Now().Before(end) {
		for range 1000 {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	spinSink.Add(x)
}

// ---- publisher ----

func runPublisher() int {
	o := newOut()
	sigs := terminated()
	n, err := childNode()
	if err != nil {
		return fail(o, err)
	}
	rec, err := openRecord(recordPath("pub"))
	if err != nil {
		return fail(o, err)
	}
	p, err := publisher.New("faults", publisher.WithMesh(n))
	if err != nil {
		return fail(o, err)
	}
	if err := awaitKind(n, mesh.KindSubscriber, "", envInt(envSubs, 0)); err != nil {
		return fail(o, fmt.Errorf("subscribers not visible: %w", err))
	}
	o.emit(msg{E: "ready", T: nowMs(), ID: n.ID()})
	pace := time.Duration(envInt(envPace, 20)) * time.Millisecond
	base := int64(envInt(envInst, 0)) * 1_000_000_000
	var published atomic.Int64
	stopProgress := make(chan struct{})
	go progress(o, stopProgress, func() msg { return msg{N: published.Load()} })
	var (
		cancel  context.CancelFunc
		done    chan struct{}
		phase   string
		before  publisher.Stats
		errMu   sync.Mutex
		errs    []string
		seq     int64
		running bool
	)
	start := func(ph string) {
		var ctx context.Context
		ctx, cancel = context.WithCancel(context.Background())
		done, phase, before, errs, running = make(chan struct{}), ph, p.Stats(), nil, true
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				seq++
				s := base + seq
				pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := p.Publish(pctx, topic, tick{Seq: s, Phase: ph})
				pcancel()
				if err != nil {
					rec.line("E %s %d %s", ph, s, pubClass(err))
					errMu.Lock()
					if len(errs) < 8 {
						errs = append(errs, err.Error())
					}
					errMu.Unlock()
				} else {
					rec.line("P %s %d", ph, s)
					published.Add(1)
				}
				t := time.NewTimer(pace)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
		}()
	}
	stop := func() {
		if !running {
			return
		}
		running = false
		cancel()
		<-done
		s := p.Stats()
		errMu.Lock()
		e := errs
		errMu.Unlock()
		o.emit(msg{E: "report", T: nowMs(), Phase: phase, Errors: e, Stats: map[string]uint64{
			"published":    s.Published - before.Published,
			"delivered":    s.Delivered - before.Delivered,
			"nosubscriber": s.NoSubscriber - before.NoSubscriber,
			"droppedfull":  s.DroppedFull - before.DroppedFull,
			"failed":       s.Failed - before.Failed,
		}})
	}
	cmds := commands()
loop:
	for {
		select {
		case <-sigs:
			break loop
		case c, ok := <-cmds:
			if !ok {
				break loop
			}
			var ph string
			switch {
			case strings.HasPrefix(c, "start ") && !running:
				fmt.Sscanf(c, "start %s", &ph)
				start(ph)
			case c == "stop":
				stop()
			default:
				o.emit(msg{E: "error", Err: fmt.Sprintf("bad command %q", c)})
			}
		}
	}
	stop()
	close(stopProgress)
	ctx, ccancel := context.WithTimeout(context.Background(), closeTimeout)
	defer ccancel()
	err = errors.Join(p.Close(ctx), closeNode(n))
	o.emit(msg{E: "closed", T: nowMs(), Err: errString(err)})
	return 0
}

func pubClass(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, publisher.ErrClosed):
		return "closed"
	case errors.Is(err, mesh.ErrClosed):
		return "node-closed"
	}
	return "unclear"
}

// ---- subscriber ----

func runSubscriber() int {
	o := newOut()
	sigs := terminated()
	n, err := childNode()
	if err != nil {
		return fail(o, err)
	}
	rec, err := openRecord(recordPath("sub-" + os.Getenv(envSlot)))
	if err != nil {
		return fail(o, err)
	}
	s, err := subscriber.New("faults", subscriber.WithMesh(n))
	if err != nil {
		return fail(o, err)
	}
	var received atomic.Int64
	subscriber.Handle(s, "load.*", func(ctx context.Context, ev tick) {
		rec.line("%d", ev.Seq)
		received.Add(1)
	})
	o.emit(msg{E: "ready", T: nowMs(), ID: n.ID()})
	stopProgress := make(chan struct{})
	go progress(o, stopProgress, func() msg { return msg{N: received.Load()} })
	<-sigs
	close(stopProgress)
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err = errors.Join(s.Close(ctx), closeNode(n))
	o.emit(msg{E: "closed", T: nowMs(), Err: errString(err)})
	return 0
}
