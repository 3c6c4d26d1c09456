package publisher_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/subscriber"
)

// Benchmarks: one publisher node and k subscriber nodes in this process,
// talking over loopback TCP, 16-byte payloads. msg/s counts events
// received by all subscribers together, measured until the last one has
// been handled.
//
//	go test -run '^$' -bench Publish -benchmem ./publisher

var payload16 = []byte("0123456789abcdef")

func benchPublish(b *testing.B, subs, publishers int) {
	nodes := meshtest.Cluster(b, 1+subs)
	pub := newPub(b, nodes[0])
	var got atomic.Int64
	for i := 1; i <= subs; i++ {
		s := newSub(b, nodes[i], fmt.Sprintf("bench%d", i))
		s.On("bench.event", func(_ context.Context, m *subscriber.Message) {
			if len(m.Payload()) == 0 {
				b.Error("empty payload")
			}
			got.Add(1)
		})
	}
	waitSubscribers(b, nodes[0], subs)
	ctx := context.Background()
	// Warm up: connections, routes, buffers.
	for range 1000 {
		if err := pub.Publish(ctx, "bench.event", payload16); err != nil {
			b.Fatal(err)
		}
	}
	waitCount(b, &got, int64(1000*subs))
	got.Store(0)

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range publishers {
		n := b.N / publishers
		if g == 0 {
			n += b.N % publishers
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if err := pub.Publish(ctx, "bench.event", payload16); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitCount(b, &got, int64(b.N*subs))
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*subs)/elapsed.Seconds(), "msg/s")
}

func waitCount(b *testing.B, got *atomic.Int64, want int64) {
	deadline := time.Now().Add(time.Minute)
	for got.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("received %d of %d events", got.Load(), want)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// BenchmarkPublish1to1: one goroutine publishes to one subscriber process.
func BenchmarkPublish1to1(b *testing.B) { benchPublish(b, 1, 1) }

// BenchmarkPublish1to4: one goroutine publishes to four subscriber
// processes, each receiving every event.
func BenchmarkPublish1to4(b *testing.B) { benchPublish(b, 4, 1) }

// BenchmarkPublish1to1Parallel: eight goroutines of one publisher share
// the connection.
func BenchmarkPublish1to1Parallel(b *testing.B) { benchPublish(b, 1, 8) }
