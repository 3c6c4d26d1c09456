package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// chart draws the ratios as a horizontal grouped bar chart on a log scale:
// one group per row, a bar for warren vs cote and one for warren vs raw TCP,
// growing right from 1× when warren is better and left when it is worse,
// with the target ratio marked in red.
func (rep *report) chart() string {
	type bar struct {
		v, target float64
		series    int
	}
	type group struct {
		label string
		bars  []bar
	}
	var groups []group
	lo, hi := 0.5, 10.0
	for _, r := range rep.Rows {
		g := group{label: r.ID + "  " + r.Name}
		for i, v := range []*float64{r.VsCote, r.VsRaw} {
			if v == nil {
				continue
			}
			g.bars = append(g.bars, bar{v: *v, target: r.ratioTargets[i], series: i})
			lo, hi = math.Min(lo, *v), math.Max(hi, *v)
		}
		if len(g.bars) > 0 {
			groups = append(groups, g)
		}
	}
	ticks := []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000}
	for i := len(ticks) - 1; i >= 0; i-- {
		if ticks[i] <= lo/2.2 || i == 0 {
			lo = ticks[i]
			break
		}
	}
	for _, t := range ticks {
		if t >= hi*1.3 || t == ticks[len(ticks)-1] {
			hi = t
			break
		}
	}
	const (
		width, labelW, right = 960, 330, 60
		top, barH, gap       = 78, 13, 12
	)
	x0, x1 := float64(labelW), float64(width-right)
	x := func(v float64) float64 {
		v = math.Min(math.Max(v, lo), hi)
		return x0 + (math.Log(v)-math.Log(lo))/(math.Log(hi)-math.Log(lo))*(x1-x0)
	}
	groupH := 2*barH + gap
	height := top + len(groups)*groupH + 40
	colors := []string{"#2b6cb0", "#a0aec0"}
	names := []string{"warren vs cote 1.2.0", "warren vs raw Go TCP"}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="16" y="24" font-size="16" font-weight="bold">How many times better warren is (log scale; right of 1× is better)</text>`+"\n")
	fmt.Fprintf(&b, `<text x="16" y="42" fill="#4a5568">%s</text>`+"\n", html.EscapeString(fmt.Sprintf(
		"%d cores, %s, Node %s; load average %s; rates: warren÷other, times and memory: other÷warren",
		rep.Machine.Cores, rep.Machine.Go, orDash(rep.Machine.Node), rep.Machine.LoadBefore)))
	for i, n := range names {
		lx := 16 + i*220
		fmt.Fprintf(&b, `<rect x="%d" y="52" width="14" height="12" fill="%s"/><text x="%d" y="62">%s</text>`+"\n", lx, colors[i], lx+20, n)
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="57" x2="%d" y2="57" stroke="#e53e3e" stroke-width="2"/><text x="%d" y="62">target</text>`+"\n", 16+2*220, 16+2*220+14, 16+2*220+20)
	plotBottom := top + len(groups)*groupH
	for _, t := range ticks {
		if t < lo || t > hi {
			continue
		}
		tx := x(t)
		stroke, w := "#e2e8f0", 1
		if t == 1 {
			stroke, w = "#2d3748", 2
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="%d"/>`+"\n", tx, top-6, tx, plotBottom, stroke, w)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#4a5568">%s×</text>`+"\n", tx, plotBottom+16, trimFloat(t))
	}
	for gi, g := range groups {
		gy := top + gi*groupH
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW-10, gy+barH+4, html.EscapeString(g.label))
		for _, br := range g.bars {
			by := gy + br.series*barH
			a, c := x(1), x(br.v)
			left, w := math.Min(a, c), math.Abs(c-a)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %.2f×</title></rect>`+"\n",
				left, by, math.Max(w, 1), barH-2, colors[br.series], names[br.series], br.v)
			anchor, lx := "start", math.Max(a, c)+4
			if br.v < 1 {
				anchor, lx = "end", left-4
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="%s" font-size="11">%.2f×</text>`+"\n", lx, by+barH-3, anchor, br.v)
			if br.target > 0 {
				tx := x(br.target)
				color := "#e53e3e"
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"><title>target %s×</title></line>`+"\n",
					tx, by-1, tx, by+barH-1, color, trimFloat(br.target))
			}
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%g", v)
	return s
}
