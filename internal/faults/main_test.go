//go:build linux

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/mesh"
)

// Environment of a re-executed child.
const (
	envRole   = "WARREN_FAULTS_ROLE"   // driver, responder, publisher, subscriber
	envHostNS = "WARREN_FAULTS_HOSTNS" // the parent's network namespace, where a child refuses to run
	envDir    = "WARREN_FAULTS_DIR"    // where records are written
	envInst   = "WARREN_FAULTS_INST"   // unique instance number of the process
	envLife   = "WARREN_FAULTS_LIFE"   // seconds a child may live at most
	envBusy   = "WARREN_FAULTS_BUSY"   // responder: also handle "busy" (a CPU-bound handler), ms per request
	envPace   = "WARREN_FAULTS_PACE"   // driver, publisher: pause between requests or events, ms
	envSlot   = "WARREN_FAULTS_SLOT"   // subscriber: the logical subscriber it is (s1, s2)
	envSubs   = "WARREN_FAULTS_SUBS"   // publisher: subscribers to wait for before ready
	envResps  = "WARREN_FAULTS_RESPS"  // driver: responders to wait for before ready

	// envTable names the file the Markdown table is written to.
	envTable = "WARREN_FAULTS_TABLE"
	// envLong selects the long mode.
	envLong = "WARREN_FAULTS_LONG"

	closeTimeout = 8 * time.Second
	reqTimeout   = 15 * time.Second // each request, held or in flight
	progressTick = 100 * time.Millisecond
)

func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runRole(role))
	}
	// Safety net: a node created by mistake in the test process itself stays
	// off multicast. Children get their environment explicitly.
	os.Setenv(mesh.EnvDiscovery, "none")
	os.Exit(m.Run())
}

func netnsID() (string, error) { return os.Readlink("/proc/self/ns/net") }

func runRole(role string) int {
	self, err := netnsID()
	if err != nil || os.Getenv(envHostNS) == "" || self == os.Getenv(envHostNS) {
		fmt.Fprintf(os.Stderr, "faults %s: refusing to run outside a test network namespace (%s, %v)\n", role, self, err)
		return 3
	}
	life, _ := strconv.Atoi(os.Getenv(envLife))
	if life <= 0 {
		life = 300
	}
	// Whatever happens to the parent, a child does not outlive this.
	time.AfterFunc(time.Duration(life)*time.Second, func() {
		fmt.Fprintf(os.Stderr, "faults %s: maximum lifetime reached\n", role)
		os.Exit(4)
	})
	switch role {
	case "driver":
		return runDriver()
	case "responder":
		return runResponder()
	case "publisher":
		return runPublisher()
	case "subscriber":
		return runSubscriber()
	}
	fmt.Fprintf(os.Stderr, "faults: unknown role %q\n", role)
	return 2
}

// out writes JSON lines to stdout, one call at a time.
type out struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newOut() *out { return &out{enc: json.NewEncoder(os.Stdout)} }

func (o *out) emit(v any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.enc.Encode(v); err != nil {
		fmt.Fprintf(os.Stderr, "faults: stdout: %v\n", err)
	}
}

// msg is every JSON line a child prints; E says which kind it is.
type msg struct {
	E     string `json:"e"`               // ready, error, progress, member, report, closed
	T     int64  `json:"t,omitempty"`     // unix milliseconds
	ID    string `json:"id,omitempty"`    // ready: node ID; member: node ID
	Name  string `json:"name,omitempty"`  // member: node name
	Type  string `json:"type,omitempty"`  // member: joined, left, failed
	Err   string `json:"err,omitempty"`   // error
	Phase string `json:"phase,omitempty"` // report

	// driver progress: answered since the process started, by requester and
	// by responder name
	Retry int64            `json:"retry,omitempty"`
	Plain int64            `json:"plain,omitempty"`
	By    map[string]int64 `json:"by,omitempty"`
	// subscriber and publisher progress: events received or published
	N int64 `json:"n,omitempty"`

	// report: the requesters' (retry.retried, plain.rejected, ...) or the
	// publisher's counters for the phase, and its first errors
	Stats  map[string]uint64 `json:"stats,omitempty"`
	Errors []string          `json:"errors,omitempty"`

	from *child // report: the process that printed it (set by poll)
}

func nowMs() int64 { return time.Now().UnixMilli() }

// record appends lines to a file with one write each, so they survive a
// SIGKILL of the process.
type record struct {
	mu sync.Mutex
	f  *os.File
}

func openRecord(name string) (*record, error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &record{f: f}, nil
}

func (r *record) line(format string, args ...any) {
	s := fmt.Sprintf(format, args...) + "\n"
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.f.WriteString(s); err != nil {
		fmt.Fprintf(os.Stderr, "faults: record: %v\n", err)
	}
}

func recordPath(kind string) string {
	return fmt.Sprintf("%s/%s-%s.rec", os.Getenv(envDir), kind, os.Getenv(envInst))
}

// childNode builds the process's node from the WARREN_* variables, logging
// to stderr (kept by the parent, shown when a test fails).
func childNode() (*mesh.Node, error) {
	level := slog.LevelInfo
	if strings.EqualFold(os.Getenv(mesh.EnvLog), "debug") {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return mesh.New(mesh.WithLogger(log))
}

func closeNode(n *mesh.Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return n.Close(ctx)
}

// awaitKind waits until the node sees at least k active components of kind
// handling handles (any, when empty), so a role starts its load only once
// its peers are visible, as a careful application would.
func awaitKind(n *mesh.Node, kind mesh.Kind, handles string, k int) error {
	if k <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return n.Await(ctx, func(cs []mesh.Component) bool {
		got := 0
		for _, c := range cs {
			if c.Kind == kind && c.State == mesh.StateActive && (handles == "" || contains(c.Handles, handles)) {
				got++
			}
		}
		return got >= k
	})
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}
