package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The demo runs real processes on loopback with mDNS off (it sets that for
// every service it starts), so it is safe in the host namespace.

func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the services; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out syncBuffer
	start := time.Now()
	err := run(ctx, &out, config{hold: time.Second})
	transcript := out.String()
	t.Logf("demo took %s; transcript:\n%s", time.Since(start).Round(time.Millisecond), transcript)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	tally := regexp.MustCompile(`tally: (validation-1-\w+) 3, (validation-2-\w+) 3, (validation-3-\w+) 3\n`)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`payment-service sees 3 validation services and 1 subscriber`),
		tally,
		regexp.MustCompile(`GET /pay/12ab34 422 \{"card":"12ab34","status":"rejected",.*"code":"invalid_card"\}`),
		regexp.MustCompile(`payment-service sees 0 validation services`),
		regexp.MustCompile(`still waiting \(1\.\ds\)`),
		regexp.MustCompile(`GET /pay/5555555555554444 200 validated by validation-4-\w+\n`),
		regexp.MustCompile(`the monitor saw 10 payment.completed and 1 payment.rejected events`),
	} {
		if !want.MatchString(transcript) {
			t.Errorf("the transcript lacks %q", want)
		}
	}
	assertAllGone(t, transcript)
}

// TestDemoInterrupted cancels the demo (as Ctrl-C does) while a payment is
// held, and checks that every process it started is gone.
func TestDemoInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the services; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out := syncBuffer{onWrite: func(s string) {
		if strings.Contains(s, "still waiting") {
			cancel()
		}
	}}
	err := run(ctx, &out, config{hold: 5 * time.Second})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v, want context.Canceled\n%s", err, out.String())
	}
	assertAllGone(t, out.String())
}

// assertAllGone checks that every process the transcript names has exited
// and that the demo's directory is removed.
func assertAllGone(t *testing.T, transcript string) {
	t.Helper()
	if m := regexp.MustCompile(`into (\S+)`).FindStringSubmatch(transcript); m == nil {
		t.Errorf("the transcript does not name the demo's directory")
	} else if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the demo's directory %s is still there (stat: %v)", m[1], err)
	}
	pids := regexp.MustCompile(`pid (\d+)`).FindAllStringSubmatch(transcript, -1)
	if len(pids) < 5 {
		t.Errorf("the transcript names %d processes, want at least 5", len(pids))
	}
	for _, m := range pids {
		pid, _ := strconv.Atoi(m[1])
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d is still there after the demo (kill 0: %v)", pid, err)
		}
	}
}

// syncBuffer is a transcript writer safe for concurrent use.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	onWrite func(string)
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	n, err := s.b.Write(p)
	s.mu.Unlock()
	if s.onWrite != nil {
		s.onWrite(string(p))
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
