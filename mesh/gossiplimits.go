package mesh

import (
	"errors"
	"fmt"

	"github.com/warrenmesh/warren/internal/codec"
)

// Bounds on a gossip message before it is decoded. msgpack's decoder sizes a
// slice from the length its header claims (vmihailenco/msgpack v5.4.1 does
// so whatever its allocation limit says), so five bytes claiming four
// billion components would make a node allocate hundreds of gigabytes and
// die. checkGossip rejects such a message first.
const (
	// maxGossipElems bounds the array elements of one message in all (node
	// states, their components, the types they handle), which bounds what
	// decoding it allocates to a few tens of megabytes.
	maxGossipElems = 1 << 18
	// maxGossipDepth bounds nesting (the catalogue nests four deep).
	maxGossipDepth = 16
)

var errGossipLimits = errors.New("mesh: gossip message out of bounds")

// checkGossip walks the msgpack value at the start of b without decoding
// it, and fails when it is truncated, nests deeper than maxGossipDepth, or
// has an array or map that claims more elements than the bytes left could
// hold (every element takes at least one byte), or more than
// maxGossipElems array elements in all. A message that passes decodes
// within memory proportional to its size.
func checkGossip(b []byte) error {
	if err := codec.Check(b, codec.Limits{MaxDepth: maxGossipDepth, MaxElems: maxGossipElems}); err != nil {
		return fmt.Errorf("%w: %w", errGossipLimits, err)
	}
	return nil
}
