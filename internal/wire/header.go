package wire

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
)

// Header is the routing and status part of a frame, encoded as a msgpack
// array of 8 elements in field order.
type Header struct {
	To       uint64 // component id at the receiver (0 = the node itself)
	From     uint64 // component id at the sender
	Seq      uint64 // request id, event sequence, or credit count
	Name     string // request type, topic, or node id in a hello
	Deadline int64  // unix nanoseconds; 0 = none
	Status   uint8  // responses: see Status constants
	Code     string // error code (responses)
	Msg      string // error message (responses), or data address (hello)
}

const headerFields = 8

// msgpack type bytes used here.
const (
	mpNil      = 0xc0
	mpFalse    = 0xc2
	mpTrue     = 0xc3
	mpBin8     = 0xc4
	mpBin16    = 0xc5
	mpBin32    = 0xc6
	mpExt8     = 0xc7
	mpExt16    = 0xc8
	mpExt32    = 0xc9
	mpFloat32  = 0xca
	mpFloat64  = 0xcb
	mpUint8    = 0xcc
	mpUint16   = 0xcd
	mpUint32   = 0xce
	mpUint64   = 0xcf
	mpInt8     = 0xd0
	mpInt16    = 0xd1
	mpInt32    = 0xd2
	mpInt64    = 0xd3
	mpFixExt1  = 0xd4
	mpFixExt16 = 0xd8
	mpStr8     = 0xd9
	mpStr16    = 0xda
	mpStr32    = 0xdb
	mpArray16  = 0xdc
	mpArray32  = 0xdd
	mpFixArray = 0x90
	mpFixStr   = 0xa0
)

func uintSize(v uint64) int {
	switch {
	case v <= 0x7f:
		return 1
	case v <= math.MaxUint8:
		return 2
	case v <= math.MaxUint16:
		return 3
	case v <= math.MaxUint32:
		return 5
	}
	return 9
}

func intSize(v int64) int {
	if v >= 0 {
		return uintSize(uint64(v))
	}
	switch {
	case v >= -32:
		return 1
	case v >= math.MinInt8:
		return 2
	case v >= math.MinInt16:
		return 3
	case v >= math.MinInt32:
		return 5
	}
	return 9
}

func strSize(n int) int {
	switch {
	case n <= 31:
		return 1 + n
	case n <= math.MaxUint8:
		return 2 + n
	case n <= math.MaxUint16:
		return 3 + n
	}
	return 5 + n
}

// msgpackSize is len(h.AppendMsgpack(nil)).
func (h *Header) msgpackSize() int {
	return 1 + uintSize(h.To) + uintSize(h.From) + uintSize(h.Seq) + strSize(len(h.Name)) +
		intSize(h.Deadline) + uintSize(uint64(h.Status)) + strSize(len(h.Code)) + strSize(len(h.Msg))
}

// AppendMsgpack appends h as a msgpack array of 8 elements, each in its
// smallest encoding, and returns the extended buffer. Strings longer than
// 4 GiB-1 cannot be encoded in msgpack; AppendFrame refuses such headers as
// too large, and AppendMsgpack panics on them.
func (h *Header) AppendMsgpack(dst []byte) []byte {
	dst = append(dst, mpFixArray|headerFields)
	// The one-byte forms (small ids, no deadline, status 0, empty code and
	// message) inline; the rest through the append functions.
	if h.To <= 0x7f && h.From <= 0x7f {
		dst = append(dst, byte(h.To), byte(h.From))
	} else {
		dst = appendUint(appendUint(dst, h.To), h.From)
	}
	dst = appendUint(dst, h.Seq)
	dst = appendStr(dst, h.Name)
	if h.Deadline == 0 && h.Status <= 0x7f {
		dst = append(dst, 0, h.Status)
	} else {
		dst = appendUint(appendInt(dst, h.Deadline), uint64(h.Status))
	}
	if h.Code == "" && h.Msg == "" {
		return append(dst, mpFixStr, mpFixStr)
	}
	return appendStr(appendStr(dst, h.Code), h.Msg)
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, mpUint8, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, mpUint16), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, mpUint32), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, mpUint64), v)
}

// appendInt writes v in its smallest encoding: as appendUint when it is not
// negative (msgpack's uint formats are one byte shorter for 128..255 and
// equal otherwise), else as negative fixint or int8..int64.
func appendInt(b []byte, v int64) []byte {
	if v >= 0 {
		return appendUint(b, uint64(v))
	}
	switch {
	case v >= -32:
		return append(b, byte(v)) // negative fixint
	case v >= math.MinInt8:
		return append(b, mpInt8, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, mpInt16), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, mpInt32), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, mpInt64), uint64(v))
}

func appendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n <= 31:
		b = append(b, mpFixStr|byte(n))
	case n <= math.MaxUint8:
		b = append(b, mpStr8, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, mpStr16), uint16(n))
	case uint64(n) <= math.MaxUint32:
		b = binary.BigEndian.AppendUint32(append(b, mpStr32), uint32(n))
	default:
		panic("wire: header string longer than 4 GiB-1")
	}
	return append(b, s...)
}

// UnmarshalMsgpack decodes a header from b, which must hold exactly one
// msgpack array of at least 8 elements (see the package comment for what is
// accepted). Errors wrap ErrMalformed. Only the strings allocate.
func (h *Header) UnmarshalMsgpack(b []byte) error {
	return h.unmarshal(b, nil)
}

func (h *Header) unmarshal(b []byte, tab *strTable) error {
	if h.unmarshalFast(b, tab) {
		return nil
	}
	return h.unmarshalAny(b, tab)
}

// unmarshalAny is the general decoder: every encoding the package
// documentation accepts.
func (h *Header) unmarshalAny(b []byte, tab *strTable) error {
	d := decoder{b: b, tab: tab}
	n, err := d.arrayLen()
	if err != nil {
		return err
	}
	if n < headerFields {
		return fmt.Errorf("%w: header has %d elements, want %d", ErrMalformed, n, headerFields)
	}
	var x Header
	if x.To, err = d.uint("To", math.MaxUint64); err != nil {
		return err
	}
	if x.From, err = d.uint("From", math.MaxUint64); err != nil {
		return err
	}
	if x.Seq, err = d.uint("Seq", math.MaxUint64); err != nil {
		return err
	}
	if x.Name, err = d.str("Name"); err != nil {
		return err
	}
	if x.Deadline, err = d.int("Deadline"); err != nil {
		return err
	}
	status, err := d.uint("Status", math.MaxUint8)
	if err != nil {
		return err
	}
	x.Status = uint8(status)
	if x.Code, err = d.str("Code"); err != nil {
		return err
	}
	if x.Msg, err = d.str("Msg"); err != nil {
		return err
	}
	for i := uint32(headerFields); i < n; i++ {
		if err := d.skip(); err != nil {
			return err
		}
	}
	if d.i != len(d.b) {
		return fmt.Errorf("%w: %d bytes of trailing garbage after the header", ErrMalformed, len(d.b)-d.i)
	}
	*h = x
	return nil
}

// unmarshalFast decodes b when it is in the form AppendMsgpack writes
// (exactly 8 elements; integers as fixint, negative fixint for Deadline, or
// uint8..uint64; strings as fixstr or str8), which is every header warren
// sends, in one pass with no error values. It reports false, leaving h
// alone, for anything else: the general decoder then decides, so the
// result is the same either way (FuzzHeaderFastPath checks it). The
// one-byte forms are decoded inline (by hand: the compiler inlines no
// helper that falls back to fastUint or fastStr).
func (h *Header) unmarshalFast(b []byte, tab *strTable) bool {
	if len(b) < 1+headerFields || b[0] != mpFixArray|headerFields {
		return false
	}
	var x Header
	i, ok := 1, false
	if b[i] <= 0x7f {
		x.To, i = uint64(b[i]), i+1
	} else if x.To, i, ok = fastUint(b, i); !ok {
		return false
	}
	if i < len(b) && b[i] <= 0x7f {
		x.From, i = uint64(b[i]), i+1
	} else if x.From, i, ok = fastUint(b, i); !ok {
		return false
	}
	if i < len(b) && b[i] <= 0x7f {
		x.Seq, i = uint64(b[i]), i+1
	} else if x.Seq, i, ok = fastUint(b, i); !ok {
		return false
	}
	if x.Name, i, ok = fastStr(b, i, tab); !ok {
		return false
	}
	switch {
	case i >= len(b):
		return false
	case b[i] <= 0x7f:
		x.Deadline, i = int64(b[i]), i+1
	case b[i] >= 0xe0:
		x.Deadline, i = int64(int8(b[i])), i+1 // negative fixint
	default:
		var d uint64
		if d, i, ok = fastUint(b, i); !ok || d > math.MaxInt64 {
			return false
		}
		x.Deadline = int64(d)
	}
	if i < len(b) && b[i] <= 0x7f {
		x.Status, i = b[i], i+1
	} else {
		var st uint64
		if st, i, ok = fastUint(b, i); !ok || st > math.MaxUint8 {
			return false
		}
		x.Status = uint8(st)
	}
	if i < len(b) && b[i] == mpFixStr {
		i++ // empty Code, as in every reply but errors
	} else if x.Code, i, ok = fastStr(b, i, tab); !ok {
		return false
	}
	if i < len(b) && b[i] == mpFixStr {
		i++
	} else if x.Msg, i, ok = fastStr(b, i, tab); !ok {
		return false
	}
	if i != len(b) {
		return false
	}
	*h = x
	return true
}

// fastUint reads a positive fixint or uint8..uint64 at b[i].
func fastUint(b []byte, i int) (uint64, int, bool) {
	if i >= len(b) {
		return 0, i, false
	}
	c := b[i]
	if c <= 0x7f {
		return uint64(c), i + 1, true
	}
	if c < mpUint8 || c > mpUint64 {
		return 0, i, false
	}
	n := 1 << (c - mpUint8)
	if len(b)-i-1 < n {
		return 0, i, false
	}
	p := b[i+1 : i+1+n]
	var v uint64
	switch n {
	case 1:
		v = uint64(p[0])
	case 2:
		v = uint64(binary.BigEndian.Uint16(p))
	case 4:
		v = uint64(binary.BigEndian.Uint32(p))
	default:
		v = binary.BigEndian.Uint64(p)
	}
	return v, i + 1 + n, true
}

// fastStr reads a fixstr or str8 at b[i].
func fastStr(b []byte, i int, tab *strTable) (string, int, bool) {
	if i >= len(b) {
		return "", i, false
	}
	var n, start int
	switch c := b[i]; {
	case c&0xe0 == mpFixStr:
		n, start = int(c&0x1f), i+1
	case c == mpStr8 && i+1 < len(b):
		n, start = int(b[i+1]), i+2
	default:
		return "", i, false
	}
	if len(b)-start < n {
		return "", i, false
	}
	return tab.str(b[start : start+n]), start + n, true
}

// decoder reads msgpack values from b starting at i.
type decoder struct {
	b   []byte
	i   int
	tab *strTable
}

func errTruncated() error { return fmt.Errorf("%w: truncated header", ErrMalformed) }

func errType(field string, c byte) error {
	return fmt.Errorf("%w: header field %s: unexpected msgpack type 0x%02x", ErrMalformed, field, c)
}

// next returns the next n bytes.
func (d *decoder) next(n int) ([]byte, bool) {
	if n < 0 || len(d.b)-d.i < n {
		return nil, false
	}
	p := d.b[d.i : d.i+n]
	d.i += n
	return p, true
}

// be reads an n-byte big-endian unsigned number (n is 1, 2, 4 or 8).
func (d *decoder) be(n int) (uint64, bool) {
	p, ok := d.next(n)
	if !ok {
		return 0, false
	}
	switch n {
	case 1:
		return uint64(p[0]), true
	case 2:
		return uint64(binary.BigEndian.Uint16(p)), true
	case 4:
		return uint64(binary.BigEndian.Uint32(p)), true
	}
	return binary.BigEndian.Uint64(p), true
}

func (d *decoder) arrayLen() (uint32, error) {
	p, ok := d.next(1)
	if !ok {
		return 0, errTruncated()
	}
	c := p[0]
	var n uint64
	switch {
	case c&0xf0 == mpFixArray:
		return uint32(c & 0x0f), nil
	case c == mpArray16:
		n, ok = d.be(2)
	case c == mpArray32:
		n, ok = d.be(4)
	default:
		return 0, fmt.Errorf("%w: header is msgpack type 0x%02x, not an array", ErrMalformed, c)
	}
	if !ok {
		return 0, errTruncated()
	}
	return uint32(n), nil
}

// integer reads any msgpack integer (or nil, as 0). When neg is true, v holds
// the bits of a negative int64.
func (d *decoder) integer(field string) (v uint64, neg bool, err error) {
	p, ok := d.next(1)
	if !ok {
		return 0, false, errTruncated()
	}
	c := p[0]
	switch {
	case c <= 0x7f:
		return uint64(c), false, nil
	case c >= 0xe0:
		return uint64(int64(int8(c))), true, nil
	case c == mpNil:
		return 0, false, nil
	case c >= mpUint8 && c <= mpUint64:
		v, ok = d.be(1 << (c - mpUint8))
		if !ok {
			return 0, false, errTruncated()
		}
		return v, false, nil
	case c >= mpInt8 && c <= mpInt64:
		size := 1 << (c - mpInt8)
		v, ok = d.be(size)
		if !ok {
			return 0, false, errTruncated()
		}
		// Sign-extend from size bytes.
		shift := 64 - 8*uint(size)
		s := int64(v<<shift) >> shift
		return uint64(s), s < 0, nil
	}
	return 0, false, errType(field, c)
}

func (d *decoder) uint(field string, limit uint64) (uint64, error) {
	v, neg, err := d.integer(field)
	if err != nil {
		return 0, err
	}
	if neg {
		return 0, fmt.Errorf("%w: header field %s: negative value %d", ErrMalformed, field, int64(v))
	}
	if v > limit {
		return 0, fmt.Errorf("%w: header field %s: value %d out of range", ErrMalformed, field, v)
	}
	return v, nil
}

func (d *decoder) int(field string) (int64, error) {
	v, neg, err := d.integer(field)
	if err != nil {
		return 0, err
	}
	if !neg && v > math.MaxInt64 {
		return 0, fmt.Errorf("%w: header field %s: value %d out of range", ErrMalformed, field, v)
	}
	return int64(v), nil
}

// str reads a str, bin or nil as a string.
func (d *decoder) str(field string) (string, error) {
	p, ok := d.next(1)
	if !ok {
		return "", errTruncated()
	}
	c := p[0]
	var n uint64
	switch {
	case c&0xe0 == mpFixStr:
		n = uint64(c & 0x1f)
	case c == mpNil:
		return "", nil
	case c == mpStr8 || c == mpBin8:
		n, ok = d.be(1)
	case c == mpStr16 || c == mpBin16:
		n, ok = d.be(2)
	case c == mpStr32 || c == mpBin32:
		n, ok = d.be(4)
	default:
		return "", errType(field, c)
	}
	if !ok {
		return "", errTruncated()
	}
	if n > uint64(len(d.b)-d.i) {
		return "", errTruncated()
	}
	s := d.b[d.i : d.i+int(n)]
	d.i += int(n)
	return d.tab.str(s), nil
}

// skip steps over one element of a simple type (nil, bool, integer, float,
// str, bin, ext). Arrays and maps are refused.
func (d *decoder) skip() error {
	p, ok := d.next(1)
	if !ok {
		return errTruncated()
	}
	c := p[0]
	var n uint64 // bytes to skip after the type byte (and length, if any)
	switch {
	case c <= 0x7f || c >= 0xe0 || c == mpNil || c == mpFalse || c == mpTrue:
		return nil
	case c&0xe0 == mpFixStr:
		n = uint64(c & 0x1f)
	case c >= mpUint8 && c <= mpUint64:
		n = 1 << (c - mpUint8)
	case c >= mpInt8 && c <= mpInt64:
		n = 1 << (c - mpInt8)
	case c == mpFloat32:
		n = 4
	case c == mpFloat64:
		n = 8
	case c >= mpFixExt1 && c <= mpFixExt16:
		n = 1 + 1<<(c-mpFixExt1) // type byte + data
	case c == mpStr8 || c == mpBin8:
		n, ok = d.be(1)
	case c == mpStr16 || c == mpBin16:
		n, ok = d.be(2)
	case c == mpStr32 || c == mpBin32:
		n, ok = d.be(4)
	case c == mpExt8:
		n, ok = d.be(1)
		n++
	case c == mpExt16:
		n, ok = d.be(2)
		n++
	case c == mpExt32:
		n, ok = d.be(4)
		n++
	default:
		return fmt.Errorf("%w: extra header element of unsupported msgpack type 0x%02x", ErrMalformed, c)
	}
	if !ok || n > uint64(len(d.b)-d.i) {
		return errTruncated()
	}
	d.i += int(n)
	return nil
}

// strTable interns short strings decoded by one Reader, so that the names,
// codes and addresses that recur on a connection do not allocate each time.
// It is direct-mapped and fixed in size: hostile input can only make it miss.
type strTable struct {
	seed  maphash.Seed
	last  string // the string returned last: most frames repeat it
	slots [256]string
}

const internMaxLen = 64

func newStrTable() *strTable { return &strTable{seed: maphash.MakeSeed()} }

// str returns b as a string, from the table when possible. A nil table
// always allocates.
func (t *strTable) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if t == nil || len(b) > internMaxLen {
		return string(b)
	}
	if t.last == string(b) {
		return t.last
	}
	slot := &t.slots[maphash.Bytes(t.seed, b)%uint64(len(t.slots))]
	if *slot != string(b) {
		*slot = string(b)
	}
	t.last = *slot
	return t.last
}
