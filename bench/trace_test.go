package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A Go role with Trace set writes an execution trace once SIGUSR1 comes
// (making the row's directory), and nothing without it.
func TestTraceOnSignalWritesTraceAfterSignal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "1a", "round1") // made by the role
	cfg := roleConfig{Role: "responder", Trace: dir, MeasureMS: 200}
	stop := traceOnSignal(cfg)
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "responder-"+strconv.Itoa(os.Getpid())+".trace")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no trace at %s 10 s after the signal", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop() // ends the trace (100 ms at most: half the window) and waits until its file is closed
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("go 1.")) || len(b) < 100 {
		t.Fatalf("not an execution trace: %d bytes starting %q", len(b), b[:min(len(b), 16)])
	}
}

func TestTraceOnSignalWritesNothingWithoutSignal(t *testing.T) {
	dir := t.TempDir()
	stop := traceOnSignal(roleConfig{Role: "requester", Mode: "load", Trace: dir, MeasureMS: 4000})
	stop()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("%d files written without a signal", len(ents))
	}
}

func TestTraceForEndsInsideTheWindow(t *testing.T) {
	for _, c := range []struct {
		ms   int
		want time.Duration
	}{{8000, time.Second}, {2000, time.Second}, {1000, 500 * time.Millisecond}, {300, 150 * time.Millisecond}} {
		if got := traceFor(roleConfig{MeasureMS: c.ms}); got != c.want {
			t.Errorf("traceFor(%d ms) = %v, want %v", c.ms, got, c.want)
		}
	}
}
