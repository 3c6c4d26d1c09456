package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
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
	w := gossipWalker{b: b}
	return w.value(0)
}

type gossipWalker struct {
	b     []byte
	i     int
	elems int
}

func (w *gossipWalker) fail(format string, args ...any) error {
	return fmt.Errorf("%w: %s at byte %d", errGossipLimits, fmt.Sprintf(format, args...), w.i)
}

// skip passes n bytes.
func (w *gossipWalker) skip(n uint64) error {
	if n > uint64(len(w.b)-w.i) {
		return w.fail("truncated: %d bytes claimed, %d left", n, len(w.b)-w.i)
	}
	w.i += int(n)
	return nil
}

// size reads a k-byte big-endian length.
func (w *gossipWalker) size(k int) (uint64, error) {
	if len(w.b)-w.i < k {
		return 0, w.fail("truncated length")
	}
	p := w.b[w.i : w.i+k]
	w.i += k
	switch k {
	case 1:
		return uint64(p[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(p)), nil
	}
	return uint64(binary.BigEndian.Uint32(p)), nil
}

func (w *gossipWalker) value(depth int) error {
	if depth > maxGossipDepth {
		return w.fail("nested deeper than %d", maxGossipDepth)
	}
	if w.i >= len(w.b) {
		return w.fail("truncated")
	}
	c := w.b[w.i]
	w.i++
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3: // fixint, nil, bool
		return nil
	case c&0xe0 == 0xa0: // fixstr
		return w.skip(uint64(c & 0x1f))
	case c&0xf0 == 0x90: // fixarray
		return w.container(uint64(c&0x0f), false, depth)
	case c&0xf0 == 0x80: // fixmap
		return w.container(uint64(c&0x0f), true, depth)
	}
	var lenBytes int
	switch c {
	case 0xcc, 0xd0:
		return w.skip(1)
	case 0xcd, 0xd1:
		return w.skip(2)
	case 0xca, 0xce, 0xd2:
		return w.skip(4)
	case 0xcb, 0xcf, 0xd3:
		return w.skip(8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 and its type byte
		return w.skip(1 + 1<<(c-0xd4))
	case 0xc4, 0xd9, 0xc7: // bin8, str8, ext8
		lenBytes = 1
	case 0xc5, 0xda, 0xc8, 0xdc, 0xde: // bin16, str16, ext16, array16, map16
		lenBytes = 2
	case 0xc6, 0xdb, 0xc9, 0xdd, 0xdf: // bin32, str32, ext32, array32, map32
		lenBytes = 4
	default:
		return w.fail("invalid msgpack type 0x%02x", c)
	}
	n, err := w.size(lenBytes)
	if err != nil {
		return err
	}
	switch c {
	case 0xdc, 0xdd:
		return w.container(n, false, depth)
	case 0xde, 0xdf:
		return w.container(n, true, depth)
	case 0xc7, 0xc8, 0xc9:
		return w.skip(n + 1) // ext: type byte, then data
	}
	return w.skip(n)
}

// container walks the n elements (n key/value pairs for a map) of an array
// or map.
func (w *gossipWalker) container(n uint64, isMap bool, depth int) error {
	items := n
	if isMap {
		items *= 2
	}
	if left := uint64(len(w.b) - w.i); items > left {
		return w.fail("%d elements claimed, %d bytes left", n, left)
	}
	if !isMap {
		w.elems += int(n)
		if w.elems > maxGossipElems {
			return w.fail("more than %d array elements", maxGossipElems)
		}
	}
	for range items {
		if err := w.value(depth + 1); err != nil {
			return err
		}
	}
	return nil
}
