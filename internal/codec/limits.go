package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrLimits reports msgpack bytes refused before decoding: truncated,
// nested too deep, or claiming more elements than they could hold.
var ErrLimits = errors.New("codec: msgpack value out of bounds")

// Limits bound what Check lets through.
type Limits struct {
	// MaxDepth bounds the nesting of arrays and maps.
	MaxDepth int
	// MaxElems bounds the array elements of the whole value; 0 means only
	// the bound every value has (each element takes at least one byte).
	MaxElems int
}

// PayloadLimits are the limits Unmarshal applies to every payload: deep
// enough for any real document, shallow enough that decoding cannot
// exhaust the stack.
var PayloadLimits = Limits{MaxDepth: 256}

// Check walks the msgpack value at the start of b without decoding it, and
// fails with an error wrapping ErrLimits when it is truncated, nests deeper
// than l.MaxDepth, has an array or map that claims more elements than the
// bytes left could hold, or (with l.MaxElems) more array elements in all.
//
// msgpack's decoder sizes a slice or map from the length its header claims
// (vmihailenco/msgpack v5.4.1 does so whatever its allocation limit says),
// so five bytes claiming four billion elements would make a process
// allocate tens of gigabytes and die, and a few megabytes of nested arrays
// would overflow the stack. A value that passes decodes in memory
// proportional to its size (times the size of the element types it is
// decoded into).
func Check(b []byte, l Limits) error {
	w := walker{b: b, l: l}
	return w.value(0)
}

type walker struct {
	b     []byte
	i     int
	elems int
	l     Limits
	// rewrite, when set, collects the timestamps to rewrite (see
	// Encode) instead of failing on them.
	rewrite *[]extAt
}

// extAt is an extension value at b[start:end], its type byte at b[typ].
type extAt struct{ start, typ, end int }

func (w *walker) fail(format string, args ...any) error {
	return fmt.Errorf("%w: %s at byte %d", ErrLimits, fmt.Sprintf(format, args...), w.i)
}

// skip passes n bytes.
func (w *walker) skip(n uint64) error {
	if n > uint64(len(w.b)-w.i) {
		return w.fail("truncated: %d bytes claimed, %d left", n, len(w.b)-w.i)
	}
	w.i += int(n)
	return nil
}

// size reads a k-byte big-endian length.
func (w *walker) size(k int) (uint64, error) {
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

func (w *walker) value(depth int) error {
	if depth > w.l.MaxDepth {
		return w.fail("nested deeper than %d", w.l.MaxDepth)
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
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16: type byte, data
		return w.ext(w.i-1, 1<<(c-0xd4))
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
		return w.ext(w.i-1-lenBytes, n) // ext: type byte, then data
	}
	return w.skip(n)
}

// ext walks an extension value that started at start, after its length:
// a type byte and n bytes of data.
//
// msgpack's decoder, when it expects a map (a map type, not a struct) and
// finds an extension, skips the extension's header and reads what follows
// it as the map, whatever the extension's length says (DecodeMapLen in
// v5.4.1). Bytes that follow a header are then decoded in another
// alignment than the one walked here, where no claimed size was checked.
// So an extension whose data (or, when it has none, the next value) starts
// with a map or nil header is refused: read as a map it would lead the
// decoder off the checked path. Encode writes timestamps, the one
// extension warren's payloads carry, in a form that never starts so.
func (w *walker) ext(start int, n uint64) error {
	typ := w.i
	if err := w.skip(1); err != nil {
		return err
	}
	if w.i < len(w.b) && startsMapOrNil(w.b[w.i]) {
		if w.rewrite != nil && w.b[typ] == timestampType && (n == 4 || n == 8) && uint64(len(w.b)-w.i) >= n {
			*w.rewrite = append(*w.rewrite, extAt{start, typ, w.i + int(n)})
			return w.skip(n)
		}
		return w.fail("extension value whose data starts with a map or nil header (the decoder would read it as a map)")
	}
	return w.skip(n)
}

// startsMapOrNil reports a fixmap, map16, map32 or nil header byte.
func startsMapOrNil(c byte) bool { return c&0xf0 == 0x80 || c == 0xde || c == 0xdf || c == 0xc0 }

// timestampType is the type byte of msgpack's timestamp extension (-1).
const timestampType = 0xff

// canonical returns b with every timestamp that Check would refuse (a
// 32- or 64-bit timestamp whose first data byte looks like a map or nil
// header) written in the 96-bit form instead, whose data starts with the
// nanoseconds (below 0x3c): the same instant, in a form every msgpack
// decoder reads. It fails like Check on anything else out of bounds.
func canonical(b []byte, l Limits) ([]byte, error) {
	var fix []extAt
	w := walker{b: b, l: l, rewrite: &fix}
	if err := w.value(0); err != nil {
		return nil, err
	}
	if len(fix) == 0 {
		return b, nil
	}
	out := make([]byte, 0, len(b)+len(fix)*8)
	last := 0
	for _, e := range fix {
		out = append(out, b[last:e.start]...)
		data := b[e.typ+1 : e.end]
		var sec uint64
		var nsec uint32
		if len(data) == 4 {
			sec = uint64(binary.BigEndian.Uint32(data))
		} else {
			v := binary.BigEndian.Uint64(data)
			nsec, sec = uint32(v>>34), v&(1<<34-1)
		}
		out = append(out, 0xc7, 12, timestampType)
		out = binary.BigEndian.AppendUint32(out, nsec)
		out = binary.BigEndian.AppendUint64(out, sec)
		last = e.end
	}
	return append(out, b[last:]...), nil
}

// container walks the n elements (n key/value pairs for a map) of an array
// or map.
func (w *walker) container(n uint64, isMap bool, depth int) error {
	items := n
	if isMap {
		items *= 2
	}
	if left := uint64(len(w.b) - w.i); items > left {
		return w.fail("%d elements claimed, %d bytes left", n, left)
	}
	if !isMap {
		w.elems += int(n)
		if w.l.MaxElems > 0 && w.elems > w.l.MaxElems {
			return w.fail("more than %d array elements", w.l.MaxElems)
		}
	}
	for range items {
		if err := w.value(depth + 1); err != nil {
			return err
		}
	}
	return nil
}
