package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// measure is one implementation's figure for one row.
type measure struct {
	Value   float64     `json:"value"` // in the row's unit
	P50US   float64     `json:"p50_us,omitempty"`
	P99US   float64     `json:"p99_us,omitempty"`
	Samples []float64   `json:"samples,omitempty"`            // repetitions, or per subscriber
	Rounds  []float64   `json:"rounds,omitempty"`             // each round's value, in order, when the row ran several
	CPUUS   float64     `json:"cpu_us_per_request,omitempty"` // CPU time of all processes over the window, per request
	Cores   float64     `json:"cores_busy,omitempty"`         // that CPU time divided by the window
	Detail  string      `json:"detail,omitempty"`
	Fail    *failCounts `json:"failure,omitempty"`
	Error   string      `json:"error,omitempty"`
}

type failCounts struct {
	Issued   uint64 `json:"issued"`
	Answered uint64 `json:"answered"`
	Failed   uint64 `json:"failed"`
	Retried  uint64 `json:"retried"`
	Lost     uint64 `json:"lost"`
	Dup      uint64 `json:"answered_twice"`
}

// row is one line of the report: a scenario variant, measured for each
// implementation that applies.
type row struct {
	ID           string   `json:"id"`
	Scenario     int      `json:"scenario"`
	Name         string   `json:"name"`
	Unit         string   `json:"unit"`
	HigherBetter bool     `json:"higher_is_better"`
	Payload      int      `json:"payload_bytes,omitempty"`
	InFlight     int      `json:"in_flight,omitempty"`
	Warren       *measure `json:"warren,omitempty"`
	Cote         *measure `json:"cote,omitempty"`
	Raw          *measure `json:"raw,omitempty"`
	// Handoff is raw TCP with warren's goroutine hand-offs (-impl handoff):
	// a yardstick shown next to raw, with no ratio or target.
	Handoff *measure `json:"handoff,omitempty"`
	// VsCote and VsRaw say how many times better warren is: warren÷other
	// for rates, other÷warren for times and memory, so above 1 is better.
	VsCote *float64 `json:"warren_vs_cote,omitempty"`
	VsRaw  *float64 `json:"warren_vs_raw,omitempty"`
	// Rounds is how many rounds the row ran when more than one; the
	// ratios are then the medians of the rounds' ratios, listed here.
	Rounds       int       `json:"rounds,omitempty"`
	VsCoteRounds []float64 `json:"warren_vs_cote_rounds,omitempty"`
	VsRawRounds  []float64 `json:"warren_vs_raw_rounds,omitempty"`
	Target       string    `json:"target,omitempty"`
	Met          *bool     `json:"target_met,omitempty"`
	// check evaluates the target once the figures are in.
	check func(r *row) *bool
	// ratioTargets are drawn on the chart: vs cote, vs raw (0 for none).
	ratioTargets [2]float64
}

type machine struct {
	Cores      int    `json:"cores"`
	CPU        string `json:"cpu"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	Node       string `json:"node,omitempty"`
	Cote       string `json:"cote,omitempty"`
	LoadBefore string `json:"loadavg_before"`
	LoadAfter  string `json:"loadavg_after"`
}

type report struct {
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"duration_s"`
	Machine  machine   `json:"machine"`
	Plan     plan      `json:"plan"`
	Rows     []*row    `json:"rows"`
	Broken   []string  `json:"broken,omitempty"`
	Topology string    `json:"topology"`
}

func (r *row) finish() {
	ratio := func(w, o float64) (float64, bool) {
		v := o / w
		if r.HigherBetter {
			v = w / o
		}
		return v, !math.IsInf(v, 0) && !math.IsNaN(v) && v != 0
	}
	// adv is warren's advantage over o, and the rounds' advantages when
	// the row ran several rounds (their median is the advantage then).
	adv := func(o *measure) (*float64, []float64) {
		if r.Warren == nil || o == nil || r.Warren.Error != "" || o.Error != "" || r.Warren.Fail != nil {
			return nil, nil
		}
		if n := len(r.Warren.Rounds); n > 1 && len(o.Rounds) == n {
			rs := make([]float64, n)
			for i := range rs {
				v, ok := ratio(r.Warren.Rounds[i], o.Rounds[i])
				if !ok {
					return nil, nil
				}
				rs[i] = v
			}
			m := median(rs)
			return &m, rs
		}
		v, ok := ratio(r.Warren.Value, o.Value)
		if !ok {
			return nil, nil
		}
		return &v, nil
	}
	r.VsCote, r.VsCoteRounds = adv(r.Cote)
	r.VsRaw, r.VsRawRounds = adv(r.Raw)
	if r.check != nil {
		r.Met = r.check(r)
	}
}

// median is the median of v (the mean of the middle two for an even
// count); v is not changed.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// combineRounds makes one figure of a row's rounds: the round whose value
// is nearest the median stands for them all (its latencies, CPU time and
// details), with the median as its value and every round's value listed.
// A failed round fails the figure.
func combineRounds(ms []*measure) *measure {
	if len(ms) == 0 {
		return nil
	}
	if len(ms) == 1 {
		return ms[0]
	}
	vals := make([]float64, len(ms))
	for i, m := range ms {
		if m.Error != "" {
			return m
		}
		vals[i] = m.Value
	}
	med := median(vals)
	best := 0
	for i, v := range vals {
		if math.Abs(v-med) < math.Abs(vals[best]-med) {
			best = i
		}
	}
	m := *ms[best]
	m.Value, m.Rounds = med, vals
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = fmtNum(v)
	}
	m.Detail = fmt.Sprintf("median of %d rounds (%s); round %d, nearest the median: %s", len(vals), strings.Join(parts, ", "), best+1, m.Detail)
	return &m
}

func boolp(b bool) *bool { return &b }

// ratioAtLeast checks the warren-vs-cote (and, if raw > 0, warren-vs-raw)
// ratios.
func ratioAtLeast(cote, raw float64) func(r *row) *bool {
	return func(r *row) *bool {
		if r.VsCote == nil || (raw > 0 && r.VsRaw == nil) {
			return nil
		}
		ok := *r.VsCote >= cote
		if raw > 0 {
			ok = ok && *r.VsRaw >= raw
		}
		return &ok
	}
}

// warrenBelow checks warren's own figure.
func warrenBelow(limit float64) func(r *row) *bool {
	return func(r *row) *bool {
		if r.Warren == nil || r.Warren.Error != "" {
			return nil
		}
		return boolp(r.Warren.Value < limit)
	}
}

func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.1f k", v/1e3)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtUS(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("%.2f ms", us/1000)
	}
	return fmt.Sprintf("%.0f µs", us)
}

func (m *measure) cell(r *row) string {
	if m == nil {
		return "–"
	}
	if m.Error != "" {
		return "**failed**"
	}
	if f := m.Fail; f != nil {
		return fmt.Sprintf("lost **%d**, twice **%d**; retried %d, failed %d, answered %s",
			f.Lost, f.Dup, f.Retried, f.Failed, fmtNum(float64(f.Answered)))
	}
	s := fmtNum(m.Value)
	if m.P50US > 0 {
		s += fmt.Sprintf(" (p50 %s, p99 %s)", fmtUS(m.P50US), fmtUS(m.P99US))
	}
	return s
}

func fmtRatio(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.2f×", *v)
}

func (rep *report) markdown() string {
	var b strings.Builder
	mode := "full"
	if rep.Plan.Quick {
		mode = "quick"
	}
	fmt.Fprintf(&b, "# warren vs cote vs raw TCP (%s run, %s)\n\n", mode, rep.Started.Format("2006-01-02 15:04 MST"))
	if rep.Plan.Seeds {
		b.WriteString("Warren found its peers by seed addresses (`-seeds`), not by mDNS.\n\n")
	}
	if rep.Plan.Pin != "" {
		fmt.Fprintf(&b, "Every child was pinned to cores (`-pin %s`): a run to diagnose, not the placement the targets are about.\n\n", rep.Plan.Pin)
	}
	if rep.Plan.Profiled || rep.Plan.Traced {
		var what []string
		if rep.Plan.Profiled {
			what = append(what, "CPU profiles (`-profile`)")
		}
		if rep.Plan.Traced {
			what = append(what, "execution traces (`-trace`)")
		}
		fmt.Fprintf(&b, "The Go children wrote %s, which slows them, by different amounts for each implementation: a run to diagnose, not figures to judge the targets by.\n\n", strings.Join(what, " and "))
	}
	b.WriteString(rep.table())
	b.WriteString("\nRatios say how many times better warren is: warren ÷ other for rates, other ÷ warren for\n")
	b.WriteString("times and memory, so a ratio above 1× is in warren's favour. Rates are req/s or msg/s\n")
	b.WriteString("(pub/sub: summed over the subscribers); latencies are per request, measured by the requester.\n\n")
	if rep.hasHandoff() {
		b.WriteString("Hand-off TCP is raw TCP with the goroutine hand-offs warren's design requires and nothing else:\n")
		b.WriteString("a goroutine per caller woken by each reply, a worker per request, batched writes. It is the floor\n")
		b.WriteString("of that design: the gap between it and warren is warren's own per-request work.\n\n")
	}
	if s := rep.roundsNote(); s != "" {
		b.WriteString(s)
	}
	b.WriteString("## Details\n\n")
	for _, r := range rep.Rows {
		for _, x := range []struct {
			name string
			v    []float64
		}{{"warren vs cote", r.VsCoteRounds}, {"warren vs raw", r.VsRawRounds}} {
			if len(x.v) > 0 {
				parts := make([]string, len(x.v))
				for i, v := range x.v {
					parts[i] = fmt.Sprintf("%.2f×", v)
				}
				fmt.Fprintf(&b, "- %s %s, %s by round: %s (median %.2f×)\n", r.ID, r.Name, x.name, strings.Join(parts, ", "), median(x.v))
			}
		}
		for _, x := range []struct {
			name string
			m    *measure
		}{{"warren", r.Warren}, {"cote", r.Cote}, {"raw", r.Raw}, {"handoff", r.Handoff}} {
			if x.m == nil {
				continue
			}
			d := x.m.Detail
			if x.m.Error != "" {
				d = "error: " + x.m.Error
			}
			fmt.Fprintf(&b, "- %s %s, %s: %s\n", r.ID, r.Name, x.name, d)
		}
	}
	m := rep.Machine
	fmt.Fprintf(&b, "\n## Machine and settings\n\n")
	fmt.Fprintf(&b, "- %d cores (%s), Linux %s\n", m.Cores, m.CPU, m.Kernel)
	fmt.Fprintf(&b, "- %s; Node %s with cote %s\n", m.Go, orDash(m.Node), orDash(m.Cote))
	fmt.Fprintf(&b, "- load average before: %s; after: %s\n", m.LoadBefore, m.LoadAfter)
	fmt.Fprintf(&b, "- throughput runs: %.1f s warm-up, then %.1f s measured (%.1f s in each round of a row that ran several); cold start and appearance: median of %d fresh processes; failure: %.1f s of load, one of two responders SIGKILLed after a third\n",
		rep.Plan.WarmupS, rep.Plan.MeasureS, rep.Plan.RoundMeasureS, rep.Plan.Reps, rep.Plan.FailRunS)
	fmt.Fprintf(&b, "- payloads: 16 bytes unless the row says otherwise (cote: a string of that length in its JSON body; warren: a []byte, msgpack; raw: length-prefixed bytes)\n")
	if rep.hasHandoff() {
		fmt.Fprintf(&b, "- hand-off TCP: length-prefixed bytes behind a 4-byte caller id; one connection, a goroutine per caller, %d workers per connection on the server\n", handoffWorkers)
	}
	disc := "mDNS on the namespace's interface (zero configuration, like cote's UDP broadcast)"
	if rep.Plan.Seeds {
		disc = "seed addresses (mDNS off)"
	}
	fmt.Fprintf(&b, "- warren discovery: %s\n", disc)
	fmt.Fprintf(&b, "- topology: %s\n", rep.Topology)
	fmt.Fprintf(&b, "- whole run: %.0f s\n", rep.Seconds)
	if len(rep.Broken) > 0 {
		b.WriteString("\n## Broken scenarios\n\n")
		for _, s := range rep.Broken {
			fmt.Fprintf(&b, "- %s\n", s)
		}
	}
	return b.String()
}

// roundsNote says which rows ran several rounds and how their figures
// and ratios were made ("" when none did). Rows that run several rounds
// all run the same number: row 1a's default, or -rounds for every one.
func (rep *report) roundsNote() string {
	var ids []string
	n := 0
	for _, r := range rep.Rows {
		if r.Rounds > 1 {
			ids = append(ids, r.ID)
			n = r.Rounds
		}
	}
	if len(ids) == 0 {
		return ""
	}
	what := fmt.Sprintf("Row %s ran %d rounds", ids[0], n)
	if len(ids) > 1 {
		what = fmt.Sprintf("Rows %s ran %d rounds each", strings.Join(ids, ", "), n)
	}
	return fmt.Sprintf("%s, of %.1f s measured, the implementations taking turns within each round (in reverse\n"+
		"order every other round), so that each meets the machine's faster and slower moments alike: such a\n"+
		"row's figures are the medians of its rounds, and its ratios the medians of the rounds' ratios (each\n"+
		"round's warren against the same round's other), listed in the details.\n\n", what, rep.Plan.RoundMeasureS)
}

// hasHandoff says whether any row has a hand-off figure (or error).
func (rep *report) hasHandoff() bool {
	for _, r := range rep.Rows {
		if r.Handoff != nil {
			return true
		}
	}
	return false
}

// table is the headline Markdown table. The hand-off column is there only
// when some row has a hand-off result.
func (rep *report) table() string {
	handoff := rep.hasHandoff()
	var b strings.Builder
	if handoff {
		b.WriteString("| # | scenario | unit | warren | cote 1.2.0 | raw TCP | hand-off TCP | warren vs cote | warren vs raw | target | met |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	} else {
		b.WriteString("| # | scenario | unit | warren | cote 1.2.0 | raw TCP | warren vs cote | warren vs raw | target | met |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	}
	for _, r := range rep.Rows {
		met := "–"
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*r.Met]
		}
		raw := r.Raw.cell(r)
		if handoff {
			raw += " | " + r.Handoff.cell(r)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.ID, r.Name, r.Unit, r.Warren.cell(r), r.Cote.cell(r), raw,
			fmtRatio(r.VsCote), fmtRatio(r.VsRaw), orDash(r.Target), met)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func (rep *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"report.md":   []byte(rep.markdown()),
		"report.json": append(js, '\n'),
		"ratios.svg":  []byte(rep.chart()),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
