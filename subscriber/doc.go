// Package subscriber receives warren events published anywhere in the mesh
// on topics matching its patterns.
//
//	sub, _ := subscriber.New("payment-monitor")
//	subscriber.Handle(sub, "payment.*", func(ctx context.Context, p Payment) {
//		log.Printf("payment of %d", p.Amount)
//	})
//	sub.On("payment.**", func(ctx context.Context, m *subscriber.Message) {
//		log.Printf("event %s", m.Topic) // the full topic, e.g. payment.card.declined
//	})
//	defer sub.Close(ctx) // finishes the buffered events
//
// # Patterns
//
// Topics are dot-separated segments. In a pattern "*" matches exactly one
// segment and a final "**" one or more, so "payment.*" matches
// "payment.completed" but not "payment.card.declined", which "payment.**"
// matches. The subscriber advertises its patterns in the mesh catalogue, so
// publishers only send it events it wants. Each event is delivered once per
// subscriber, with its full topic, and every handler whose pattern matches
// runs once for it, even when several patterns match.
//
// # Groups
//
// Subscribers created WithGroup("name") form a queue group: each event of a
// topic goes to one member of the group, round-robin, so copies of a worker
// share the load. Subscribers without a group all receive every event.
//
// # Ordering, buffering and back-pressure
//
// Arriving events are copied into a bounded buffer and handed to the
// handlers by one goroutine per subscriber, one event at a time, in the
// order they arrived; events from one publisher keep their publication
// order. Handlers never run on the network read loop, and a handler that
// panics is recovered and logged, and the subscriber keeps going.
//
// Each publisher may have at most WithBuffer events (default 4096), and
// WithBufferBytes bytes of them (default 64 MiB, payloads and topics),
// outstanding at a subscriber. When either is reached, that publisher's
// Publish waits for room, or, with WithDropWhenFull, drops the event and
// counts it, so a slow subscriber never makes memory grow without bound,
// whatever the size of the events. An event larger than the byte bound
// still gets through, once at most half the bound waits.
//
// Delivery is at most once: events published before a subscriber appears in
// a publisher's catalogue, or while it is gone, are not received.
package subscriber
