package requester_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
)

// Benchmarks compare warren with a raw Go TCP echo of the same 16-byte
// payload, measured side by side:
//
//	go test -run '^$' -bench 'InFlight' -benchmem -count 5 ./requester | tee bench.txt
//
// and report warren/raw ratios from the ns/op figures.

var payload16 = []byte("0123456789abcdef")

func benchReqRes(b *testing.B, inFlight int) {
	nodes := meshtest.Cluster(b, 2)
	r := newResponder(b, nodes[1], "echo")
	// A typed handler, as the README shows and the bench tool uses.
	responder.Handle(r, "echo", func(_ context.Context, p []byte) ([]byte, error) { return p, nil })
	req := newRequester(b, nodes[0])
	waitHandlers(b, nodes[0], "echo", 1)
	ctx := context.Background()
	var out []byte
	if err := req.Send(ctx, "echo", payload16, &out); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := b.N / inFlight
	for g := 0; g < inFlight; g++ {
		n := per
		if g == 0 {
			n += b.N % inFlight
		}
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			var out []byte
			for i := 0; i < n; i++ {
				if err := req.Send(ctx, "echo", payload16, &out); err != nil {
					b.Error(err)
					return
				}
			}
		}(n)
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

func BenchmarkWarren1InFlight(b *testing.B)  { benchReqRes(b, 1) }
func BenchmarkWarren16InFlight(b *testing.B) { benchReqRes(b, 16) }
func BenchmarkWarren64InFlight(b *testing.B) { benchReqRes(b, 64) }

// BenchmarkRawTCP1InFlight is the ceiling: one connection, a 4-byte length
// prefix and 16 bytes echoed by a server goroutine, one at a time.
func BenchmarkRawTCP1InFlight(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4+len(payload16))
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 4+len(payload16))
	binary.BigEndian.PutUint32(msg, uint32(len(payload16)))
	copy(msg[4:], payload16)
	in := make([]byte, len(msg))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

var _ = requester.Call[int]
