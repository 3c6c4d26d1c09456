package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// readyTimeout bounds a service's start-up; meshTimeout the time for the
// payment service to see a change in the mesh.
const (
	readyTimeout = 15 * time.Second
	meshTimeout  = 10 * time.Second
)

var errUnexpected = errors.New("demo: unexpected result")

// demo is one run: its processes, its directory and its transcript.
type demo struct {
	cfg   config
	out   io.Writer
	start time.Time
	dir   string // binaries and logs
	procs procs

	seed        string // the payment service's gossip address, every other node's seed
	baseURL     string // the payment service's HTTP address
	validators  []*proc
	monitorProc *proc
	nextID      int // number of the next validation service
	client      *http.Client
	paid        int // validated payments so far (events the monitor should see)
	rejects     int
}

func newDemo(out io.Writer, cfg config) (*demo, error) {
	dir, err := os.MkdirTemp("", "warren-demo-")
	if err != nil {
		return nil, err
	}
	return &demo{cfg: cfg, out: out, start: time.Now(), dir: dir, nextID: 1, client: &http.Client{}}, nil
}

// say prints one transcript line stamped with the time since the start.
func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "[%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// note prints an unstamped, indented transcript line.
func (d *demo) note(format string, args ...any) {
	fmt.Fprintf(d.out, "         %s\n", fmt.Sprintf(format, args...))
}

func (d *demo) step(n int, title string) {
	fmt.Fprintf(d.out, "\nStep %d. %s\n", n, title)
}

// build compiles the three services into the demo's directory, once, with
// the go command that runs the demo (module cache or proxy as usual).
func (d *demo) build(ctx context.Context) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return fmt.Errorf("demo: run it from the warren module (go run ./examples/demo): go env GOMOD: %v", err)
	}
	d.say("building the services (go build) ...")
	began := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", d.dir+string(filepath.Separator),
		"./examples/"+validationBin, "./examples/"+paymentBin, "./examples/"+monitorBin)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("demo: go build: %w\n%s", err, out)
	}
	d.say("built in %.1fs into %s", time.Since(began).Seconds(), d.dir)
	return nil
}

func (d *demo) bin(name string) string {
	return filepath.Join(d.dir, name+exeSuffix())
}

// meshEnv is the configuration every service gets: loopback only, no
// multicast, a free gossip port, and the payment service as seed.
func (d *demo) meshEnv(name string, extra ...string) []string {
	env := []string{"WARREN_NAME=" + name, "WARREN_DISCOVERY=none", "WARREN_BIND=127.0.0.1:0", "WARREN_LOG=warn"}
	if d.seed != "" {
		env = append(env, "WARREN_SEEDS="+d.seed)
	}
	return childEnv(append(env, extra...)...)
}

// startAll starts the payment service (the seed), the monitor and three
// validation services, and waits until the payment service sees them all.
func (d *demo) startAll(ctx context.Context) error {
	// Port 0 everywhere: the payment service reports the ports it got.
	pay, err := d.procs.start(paymentBin, d.bin(paymentBin), d.dir,
		d.meshEnv(paymentBin, "PAYMENT_WAIT=30s"), "-listen", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f, err := pay.waitReady(ctx, readyTimeout)
	if err != nil {
		return err
	}
	if f["http"] == "" || f["gossip"] == "" {
		return fmt.Errorf("%w: payment-service's ready line lacks http= or gossip=: %v", errUnexpected, f)
	}
	d.seed, d.baseURL = f["gossip"], "http://"+f["http"]
	d.say("%-16s started, pid %d, HTTP on %s, gossip on %s (the seed)", paymentBin, pay.cmd.Process.Pid, d.baseURL, d.seed)

	if d.monitorProc, err = d.procs.start(monitorBin, d.bin(monitorBin), d.dir, d.meshEnv(monitorBin)); err != nil {
		return err
	}
	for range 3 {
		if _, err := d.startValidator(); err != nil {
			return err
		}
	}
	for _, p := range append([]*proc{d.monitorProc}, d.validators...) {
		if _, err := p.waitReady(ctx, readyTimeout); err != nil {
			return err
		}
		d.say("%-16s started, pid %d", p.name, p.cmd.Process.Pid)
	}
	h, err := d.awaitHealth(ctx, func(h health) bool { return h.Validators == 3 && h.Subscribers >= 1 })
	if err != nil {
		return err
	}
	d.say("payment-service sees %d validation services and %d subscriber (%d nodes in the mesh)", h.Validators, h.Subscribers, h.Members)
	return nil
}

// startValidator starts the next validation service; it does not wait.
func (d *demo) startValidator() (*proc, error) {
	name := fmt.Sprintf("validation-%d", d.nextID)
	d.nextID++
	p, err := d.procs.start(name, d.bin(validationBin), d.dir, d.meshEnv(name))
	if err != nil {
		return nil, err
	}
	d.validators = append(d.validators, p)
	return p, nil
}

// health is the payment service's GET /healthz answer.
type health struct {
	Status      string `json:"status"`
	Node        string `json:"node"`
	Members     int    `json:"members"`
	Validators  int    `json:"validators"`
	Subscribers int    `json:"subscribers"`
}

// awaitHealth polls /healthz until cond holds.
func (d *demo) awaitHealth(ctx context.Context, cond func(health) bool) (health, error) {
	ctx, cancel := context.WithTimeout(ctx, meshTimeout)
	defer cancel()
	var h health
	for {
		res, err := d.get(ctx, "/healthz")
		if err == nil {
			h = health{}
			err = json.Unmarshal(res.body, &h)
			if err == nil && cond(h) {
				return h, nil
			}
		}
		select {
		case <-ctx.Done():
			if parent := context.Cause(ctx); !errors.Is(parent, context.DeadlineExceeded) {
				return h, parent
			}
			return h, fmt.Errorf("%w: the payment service's view did not reach the expected state within %s (last: %+v, %v)", errUnexpected, meshTimeout, h, err)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// response is an HTTP answer.
type response struct {
	status int
	body   []byte
}

// payment is the payment service's GET /pay/{card} answer.
type payment struct {
	Card   string `json:"card"`
	Status string `json:"status"`
	By     string `json:"by"`
	Error  string `json:"error"`
	Code   string `json:"code"`
}

func (d *demo) get(ctx context.Context, path string) (response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.baseURL+path, nil)
	if err != nil {
		return response{}, err
	}
	res, err := d.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return response{status: res.StatusCode, body: body}, err
}

// pay calls GET /pay/{card} and decodes the answer.
func (d *demo) pay(ctx context.Context, card string) (response, payment, error) {
	res, err := d.get(ctx, "/pay/"+card)
	if err != nil {
		return res, payment{}, err
	}
	var p payment
	if err := json.Unmarshal(res.body, &p); err != nil {
		return res, p, fmt.Errorf("%w: /pay/%s answered %d %q", errUnexpected, card, res.status, res.body)
	}
	return res, p, nil
}

// cleanup stops every process and removes the directory (kept on failure,
// for its logs).
func (d *demo) cleanup(failed bool) {
	n, err := d.procs.stopAll()
	if n > 0 {
		fmt.Fprintf(d.out, "Stopped the %d processes still running.\n", n)
	}
	if err != nil {
		fmt.Fprintln(d.out, "demo: stopping:", err)
	}
	if failed {
		fmt.Fprintln(d.out, "Logs kept in", d.dir)
		return
	}
	_ = os.RemoveAll(d.dir)
}

func (d *demo) showLogs() {
	fmt.Fprintln(d.out, "\nThe services' last log lines:")
	d.procs.tail(d.out, 15)
}

// running returns the validation services that are still running.
func (d *demo) runningValidators() []*proc {
	return slices.DeleteFunc(slices.Clone(d.validators), (*proc).exited)
}
