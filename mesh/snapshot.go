package mesh

import (
	"maps"
	"sync/atomic"
)

// snapshot is a read-only copy of a map that its owner changes rarely, under
// its own lock, and that is read on every send or incoming frame. Readers
// load one pointer and take no lock: a read lock would have both cores
// write its counter on every lookup.
type snapshot[K comparable, V any] struct {
	p atomic.Pointer[map[K]V]
}

// get returns the value for k in the last published copy (the zero value
// before the first publish).
func (s *snapshot[K, V]) get(k K) V { return s.current()[k] }

// current returns the last published copy (nil before the first publish),
// which must not be modified.
func (s *snapshot[K, V]) current() map[K]V {
	if m := s.p.Load(); m != nil {
		return *m
	}
	return nil
}

// publish replaces the copy with one of m. Its caller holds the lock that
// guards m, so copies are published in the order of the changes.
func (s *snapshot[K, V]) publish(m map[K]V) {
	c := maps.Clone(m)
	s.p.Store(&c)
}
