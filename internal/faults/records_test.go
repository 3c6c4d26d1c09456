//go:build linux

package faults

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// reqRow is what happened to one requester's requests in a phase.
type reqRow struct {
	sent, answered, failed int
	lost                   int // sent, and neither answered nor failed with a typed error
	twice                  int // a second outcome for an id, or a reply for another id
	reexec                 int // ids executed by responders more than once
	phantom                int // answered, yet executed by no responder
	unclear                int // failures without a typed error
	classes                map[string]int
}

// row is one line of the table.
type row struct {
	fault        string
	retry, plain reqRow
	retried      uint64
	published    int
	delivered    int // (event, subscriber) pairs received
	dropped      int // 2 x published - delivered
	dupEvents    int // an event received twice by one subscriber
	pubErrors    int
	stall        time.Duration
	recovery     time.Duration
	recovered    bool
	limit        time.Duration
	notes        []string
	droppedBy    []string // which subscriber missed which events
}

// eachLine calls fn with the fields of every line of the record files
// matching pattern in c.dir.
func (c *cluster) eachLine(pattern string, fn func(file string, f []string)) {
	files, err := filepath.Glob(filepath.Join(c.dir, pattern))
	if err != nil {
		c.t.Fatal(err)
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			c.t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fn(filepath.Base(name), strings.Fields(sc.Text()))
		}
		f.Close()
	}
}

// requests joins the driver and responder records of a phase.
func (c *cluster) requests(phase string) (retry, plain reqRow) {
	type state struct {
		sent     []int64
		outcomes map[int64]int
		answered map[int64]bool
		row      reqRow
	}
	st := map[string]*state{
		"retry": {outcomes: map[int64]int{}, answered: map[int64]bool{}, row: reqRow{classes: map[string]int{}}},
		"plain": {outcomes: map[int64]int{}, answered: map[int64]bool{}, row: reqRow{classes: map[string]int{}}},
	}
	c.eachLine("driver-*.rec", func(_ string, f []string) {
		if len(f) < 4 || f[1] != phase || st[f[2]] == nil {
			return
		}
		s := st[f[2]]
		id, _ := strconv.ParseInt(f[3], 10, 64)
		switch {
		case f[0] == "S":
			s.sent = append(s.sent, id)
		case f[0] == "A" && len(f) == 6:
			s.outcomes[id]++
			s.answered[id] = true
			s.row.answered++
			if got, _ := strconv.ParseInt(f[5], 10, 64); got != id {
				s.row.twice++
			}
		case f[0] == "F" && len(f) == 5:
			s.outcomes[id]++
			s.row.failed++
			s.row.classes[f[4]]++
			if f[4] == "unclear" {
				s.row.unclear++
			}
		}
	})
	execs := map[int64]int{}
	c.eachLine("resp-*.rec", func(_ string, f []string) {
		if len(f) == 1 {
			id, _ := strconv.ParseInt(f[0], 10, 64)
			execs[id]++
		}
	})
	for _, s := range st {
		s.row.sent = len(s.sent)
		for _, id := range s.sent {
			switch n := s.outcomes[id]; {
			case n == 0: // no outcome (unclear failures are added below)
				s.row.lost++
			case n > 1:
				s.row.twice += n - 1
			}
			if execs[id] > 1 {
				s.row.reexec++
			}
			if s.answered[id] && execs[id] == 0 {
				s.row.phantom++
			}
		}
		s.row.lost += s.row.unclear
	}
	return st["retry"].row, st["plain"].row
}

// events joins the publisher and subscriber records of a phase.
func (c *cluster) events(phase string, r *row) {
	published := map[int64]bool{}
	c.eachLine("pub-*.rec", func(_ string, f []string) {
		if len(f) >= 3 && f[1] == phase {
			seq, _ := strconv.ParseInt(f[2], 10, 64)
			switch f[0] {
			case "P":
				published[seq] = true
			case "E":
				r.pubErrors++
			}
		}
	})
	r.published = len(published)
	got := map[string]map[int64]int{} // by subscriber slot
	c.eachLine("sub-*.rec", func(file string, f []string) {
		slot := strings.Split(strings.TrimPrefix(file, "sub-"), "-")[0]
		if len(f) != 1 {
			return
		}
		seq, _ := strconv.ParseInt(f[0], 10, 64)
		if !published[seq] {
			return
		}
		if got[slot] == nil {
			got[slot] = map[int64]int{}
		}
		got[slot][seq]++
	})
	for _, seqs := range got {
		r.delivered += len(seqs)
		for _, n := range seqs {
			r.dupEvents += n - 1
		}
	}
	r.dropped = 2*r.published - r.delivered
	if r.dropped > 0 {
		// Say who missed what, so a drop can be placed in time (one event
		// every eventEvery, in seq order).
		all := slices.Sorted(maps.Keys(published))
		slots := slices.Sorted(maps.Keys(c.subs))
		for _, slot := range slots {
			if d := missedRanges(all, got[slot]); d != "" {
				r.droppedBy = append(r.droppedBy, fmt.Sprintf("subscriber %s missed %s of seq %d-%d", slot, d, all[0], all[len(all)-1]))
			}
		}
	}
}

// missedRanges lists, as "a-b, c", the seqs of all (sorted) missing from got.
func missedRanges(all []int64, got map[int64]int) string {
	var out []string
	for i := 0; i < len(all); i++ {
		if got[all[i]] > 0 {
			continue
		}
		j := i
		for j+1 < len(all) && got[all[j+1]] == 0 {
			j++
		}
		if i == j {
			out = append(out, fmt.Sprint(all[i]))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", all[i], all[j]))
		}
		i = j
	}
	return strings.Join(out, ", ")
}

// ---- the table ----

func dur(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// markdown formats the rows as a Markdown table with notes.
func markdown(rows []row, m mode) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Fault suite (`go test ./internal/faults`, %s mode): 1 requester process with two requesters "+
		"(one `WithRetry(3)`, one without), 3 responders, 1 publisher, 2 subscribers, each a separate process "+
		"in its own network namespace; requests every %d ms per worker (4 workers with retry, 2 without), "+
		"an event every %d ms.\n\n", m.name, m.pace, m.pace)
	b.WriteString("| fault | requests sent | answered | failed, clear error (retry / no retry) | retried | lost | answered twice | events published | delivered | dropped | longest stall | recovery |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		rec := dur(r.recovery)
		if !r.recovered {
			rec = "not recovered"
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d / %d | %d | %d | %d | %d | %d | %d | %s | %s |\n",
			r.fault, r.retry.sent+r.plain.sent, r.retry.answered+r.plain.answered, r.retry.failed, r.plain.failed,
			r.retried, r.retry.lost+r.plain.lost, r.retry.twice+r.plain.twice,
			r.published, r.delivered, r.dropped, dur(r.stall), rec)
	}
	b.WriteString("\n")
	for _, r := range rows {
		var notes []string
		for _, rr := range []struct {
			name string
			row  reqRow
		}{{"with retry", r.retry}, {"without retry", r.plain}} {
			if len(rr.row.classes) > 0 {
				var cs []string
				for k, v := range rr.row.classes {
					cs = append(cs, fmt.Sprintf("%d %s", v, k))
				}
				slices.Sort(cs)
				notes = append(notes, "failed "+rr.name+": "+strings.Join(cs, ", "))
			}
		}
		switch r.retry.reexec {
		case 0:
		case 1:
			notes = append(notes, "1 retried request ran on two responders (at least once, with `WithRetry`)")
		default:
			notes = append(notes, fmt.Sprintf("%d retried requests ran on two responders (at least once, with `WithRetry`)", r.retry.reexec))
		}
		notes = append(notes, r.notes...)
		if len(notes) > 0 {
			fmt.Fprintf(&b, "- **%s**: %s.\n", r.fault, strings.Join(notes, "; "))
		}
	}
	b.WriteString("\nlost = sent - answered - failed with a typed error; answered twice counts second outcomes " +
		"and replies carrying another request's id; dropped = events not received by a subscriber that should " +
		"have had them (pub/sub is at most once: events for a subscriber that is cut off or dead are dropped); " +
		"longest stall = longest time the requester with retry got no answer; recovery = time from the end of " +
		"the fault (for a SIGKILL or a lost host: the moment it struck) until that requester runs at half its " +
		"normal rate again and every component that came back or replaced one (responder, subscriber, " +
		"requester) is served again (a subscriber: receiving events in every 100 ms sample for 1 s).\n")
	return b.String()
}
