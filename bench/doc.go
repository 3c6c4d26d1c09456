// Command bench measures warren side by side with cote 1.2.0 (Node.js) and a
// raw Go TCP echo, and writes a report:
//
//	go run ./bench          # full run, about 10 minutes
//	go run ./bench -quick   # a few seconds per scenario, for CI
//
// Every process, warren's, cote's and the raw baseline's, is a separate OS
// process inside one of two network namespaces the program creates and
// removes (also on Ctrl-C): cote discovers by UDP broadcast and warren by
// multicast DNS, and neither may ever run in the host's namespace. Go roles
// are this same binary, re-executed; cote roles are bench/cote/roles.js,
// installed with npm ci from a lockfile pinned to cote 1.2.0.
//
// The report goes to bench/out: report.md (a table with the warren/cote and
// warren/raw ratios), report.json (the same data) and ratios.svg (a chart).
//
// -impl handoff (opt-in, e.g. -impl warren,raw,handoff) adds a fourth
// implementation where raw TCP applies: raw TCP with the goroutine hand-offs
// of warren's design (a goroutine per caller, a worker per request, batched
// writes) and nothing else, the floor of that design; the report then has a
// "hand-off TCP" column, with no ratio or target.
//
// -rounds N runs each throughput row N times, the implementations taking
// turns within each round, and reports the medians of the rounds and of
// the rounds' ratios; rows 1a and 1e run 5 rounds by default.
//
// -profile DIR and -trace DIR are for diagnosis: every Go child writes CPU
// and heap profiles of its life, or (request/response rows) an execution
// trace of the first second of each measured window; the report says the
// figures are slowed by it.
//
// The program exits non-zero when a scenario is broken, for example when
// warren, with retries on, loses a request whose responder was killed.
// See bench/README.md for what each scenario measures.
package main
