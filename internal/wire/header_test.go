package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

var intBoundaries = []uint64{0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64}

var deadlineBoundaries = []int64{
	0, 1, -1, -32, -33, 127, 128, -128, -129, math.MaxInt8, math.MaxInt16, math.MaxInt16 + 1,
	math.MinInt16, math.MinInt16 - 1, math.MaxInt32, math.MaxInt32 + 1, math.MinInt32, math.MinInt32 - 1,
	math.MaxInt64, math.MinInt64, 1_750_000_000_000_000_000,
}

var strLengths = []int{0, 1, 31, 32, 255, 256, 65535, 65536, 100_000}

// testHeaders returns headers covering every encoding boundary.
func testHeaders() []Header {
	var hs []Header
	for i, v := range intBoundaries {
		hs = append(hs, Header{To: v, From: intBoundaries[len(intBoundaries)-1-i], Seq: v / 3, Status: uint8(v)})
	}
	for _, d := range deadlineBoundaries {
		hs = append(hs, Header{Deadline: d, Name: "x"})
	}
	for _, n := range strLengths {
		hs = append(hs,
			Header{Name: strings.Repeat("n", n)},
			Header{Code: strings.Repeat("c", n), Msg: strings.Repeat("\xff", n/2)},
			Header{Msg: strings.Repeat("é", n/2)})
	}
	hs = append(hs, Header{To: 7, From: 9, Seq: 1 << 40, Name: "billing.charge", Deadline: -5, Status: StatusTooLarge, Code: "E_BIG", Msg: "10.0.0.1:7000"})
	return hs
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, h := range testHeaders() {
		b := h.AppendMsgpack([]byte{0xee})
		if b[0] != 0xee {
			t.Fatal("AppendMsgpack overwrote dst")
		}
		b = b[1:]
		if len(b) != h.msgpackSize() {
			t.Fatalf("%+.60v: encoded %d bytes, msgpackSize says %d", h, len(b), h.msgpackSize())
		}
		var got Header
		if err := got.UnmarshalMsgpack(b); err != nil {
			t.Fatalf("%+.60v: %v", h, err)
		}
		if got != h {
			t.Fatalf("round trip: got %+.60v, want %+.60v", got, h)
		}
	}
}

func TestHeaderSmallestEncoding(t *testing.T) {
	tests := []struct {
		h    Header
		want []byte
	}{
		{Header{}, []byte{0x98, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0}},
		{Header{To: 127, From: 128, Seq: 256, Deadline: -32, Status: 255, Name: "ab"},
			[]byte{0x98, 0x7f, 0xcc, 0x80, 0xcd, 1, 0, 0xa2, 'a', 'b', 0xe0, 0xcc, 0xff, 0xa0, 0xa0}},
		{Header{To: 1 << 16, From: 1 << 32, Deadline: -33},
			[]byte{0x98, 0xce, 0, 1, 0, 0, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0xa0, 0xd0, 0xdf, 0, 0xa0, 0xa0}},
		{Header{Deadline: 200}, []byte{0x98, 0, 0, 0, 0xa0, 0xcc, 200, 0, 0xa0, 0xa0}},
		{Header{Deadline: -200}, []byte{0x98, 0, 0, 0, 0xa0, 0xd1, 0xff, 0x38, 0, 0xa0, 0xa0}},
		{Header{Deadline: math.MaxInt64}, []byte{0x98, 0, 0, 0, 0xa0, 0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0xa0, 0xa0}},
		{Header{Deadline: math.MinInt64}, []byte{0x98, 0, 0, 0, 0xa0, 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0xa0, 0xa0}},
		{Header{Deadline: 1 << 20}, []byte{0x98, 0, 0, 0, 0xa0, 0xce, 0, 0x10, 0, 0, 0, 0xa0, 0xa0}},
		{Header{Deadline: -1 << 20}, []byte{0x98, 0, 0, 0, 0xa0, 0xd2, 0xff, 0xf0, 0, 0, 0, 0xa0, 0xa0}},
	}
	for _, tt := range tests {
		if got := tt.h.AppendMsgpack(nil); !bytes.Equal(got, tt.want) {
			t.Errorf("%+v:\n got % x\nwant % x", tt.h, got, tt.want)
		}
	}
	for n, prefix := range map[int][]byte{31: {0xbf}, 32: {0xd9, 32}, 256: {0xda, 1, 0}, 65536: {0xdb, 0, 1, 0, 0}} {
		b := (&Header{Name: strings.Repeat("x", n)}).AppendMsgpack(nil)
		if !bytes.HasPrefix(b[4:], prefix) {
			t.Errorf("string of %d bytes: header starts % x, want the string to start % x", n, b[:8], prefix)
		}
	}
}

// asInt64 and asUint64 normalise the integer types the msgpack library
// decodes into interface values.
func asInt64(t *testing.T, v any) int64 {
	t.Helper()
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if rv.Uint() > math.MaxInt64 {
			t.Fatalf("value %d does not fit int64", rv.Uint())
		}
		return int64(rv.Uint())
	}
	t.Fatalf("not an integer: %T %v", v, v)
	return 0
}

func asUint64(t *testing.T, v any) uint64 {
	t.Helper()
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if rv.Int() < 0 {
			t.Fatalf("negative: %d", rv.Int())
		}
		return uint64(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return rv.Uint()
	}
	t.Fatalf("not an integer: %T %v", v, v)
	return 0
}

// checkWithLibrary decodes b with vmihailenco/msgpack and compares it to h.
func checkWithLibrary(t *testing.T, b []byte, h Header) {
	t.Helper()
	var vs []any
	if err := msgpack.Unmarshal(b, &vs); err != nil {
		t.Fatalf("msgpack library cannot decode % .40x: %v", b, err)
	}
	if len(vs) != 8 {
		t.Fatalf("library sees %d elements, want 8", len(vs))
	}
	got := Header{
		To: asUint64(t, vs[0]), From: asUint64(t, vs[1]), Seq: asUint64(t, vs[2]),
		Name: vs[3].(string), Deadline: asInt64(t, vs[4]), Status: uint8(asUint64(t, vs[5])),
		Code: vs[6].(string), Msg: vs[7].(string),
	}
	if got != h {
		t.Fatalf("library decoded %+.60v, want %+.60v", got, h)
	}
}

func TestHeaderIsGenuineMsgpack(t *testing.T) {
	for _, h := range testHeaders() {
		checkWithLibrary(t, h.AppendMsgpack(nil), h)
	}
}

func TestHeaderDecodesLibraryOutput(t *testing.T) {
	type asArray struct {
		//lint:ignore U1000 read by msgpack through its struct tag
		_msgpack struct{} `msgpack:",as_array"`
		To       uint64
		From     uint64
		Seq      uint64
		Name     string
		Deadline int64
		Status   uint8
		Code     string
		Msg      string
	}
	for _, h := range testHeaders() {
		b, err := msgpack.Marshal(&asArray{To: h.To, From: h.From, Seq: h.Seq, Name: h.Name, Deadline: h.Deadline, Status: h.Status, Code: h.Code, Msg: h.Msg})
		if err != nil {
			t.Fatal(err)
		}
		var got Header
		if err := got.UnmarshalMsgpack(b); err != nil {
			t.Fatalf("% .40x: %v", b, err)
		}
		if got != h {
			t.Fatalf("got %+.60v, want %+.60v", got, h)
		}
	}

	// Loose encodings: signed types for unsigned fields, bin for strings,
	// nil for zero values, and extra elements of simple types.
	enc := func(vs ...any) []byte {
		t.Helper()
		var buf bytes.Buffer
		e := msgpack.NewEncoder(&buf)
		e.UseCompactInts(false)
		if err := e.Encode(vs); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	want := Header{To: 5, From: 0, Seq: 300, Name: "topic", Deadline: 99, Status: 2, Code: "", Msg: "m"}
	loose := [][]byte{
		enc(int8(5), nil, int64(300), []byte("topic"), uint64(99), int32(2), nil, "m"),
		enc(uint64(5), int16(0), uint16(300), "topic", int8(99), uint8(2), []byte{}, []byte("m")),
		enc(int64(5), uint8(0), int32(300), "topic", uint32(99), int64(2), "", "m",
			nil, true, false, 1.5, float32(2.5), "extra", []byte("bin"), int64(-1), uint64(math.MaxUint64),
			&msgpack.RawMessage{0xd4, 1, 2}, msgpack.RawMessage{0xc7, 3, 9, 1, 2, 3}, msgpack.RawMessage{0xd8, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}),
	}
	for _, b := range loose {
		var got Header
		if err := got.UnmarshalMsgpack(b); err != nil {
			t.Fatalf("% x: %v", b, err)
		}
		if got != want {
			t.Fatalf("% x: got %+v, want %+v", b, got, want)
		}
	}
}

func TestHeaderMalformed(t *testing.T) {
	valid := (&Header{To: 300, From: 1, Seq: 70000, Name: "name", Deadline: -1000, Status: 1, Code: "code", Msg: "msg"}).AppendMsgpack(nil)
	cases := map[string][]byte{
		"empty":               {},
		"not an array":        {0x80},
		"string":              {0xa1, 'x'},
		"7 elements":          {0x97, 0, 0, 0, 0xa0, 0, 0, 0xa0},
		"trailing garbage":    append(bytes.Clone(valid), 0),
		"negative To":         {0x98, 0xff, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0},
		"negative int8 From":  {0x98, 0, 0xd0, 0x80, 0, 0xa0, 0, 0, 0xa0, 0xa0},
		"Status 256":          {0x98, 0, 0, 0, 0xa0, 0, 0xcd, 1, 0, 0xa0, 0xa0},
		"Status -1":           {0x98, 0, 0, 0, 0xa0, 0, 0xff, 0xa0, 0xa0},
		"Deadline > MaxInt64": {0x98, 0, 0, 0, 0xa0, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0xa0, 0xa0},
		"bool To":             {0x98, 0xc3, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0},
		"float Seq":           {0x98, 0, 0, 0xca, 0, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0},
		"int Name":            {0x98, 0, 0, 0, 0x01, 0, 0, 0xa0, 0xa0},
		"string Deadline":     {0x98, 0, 0, 0, 0xa0, 0xa0, 0, 0xa0, 0xa0},
		"array Code":          {0x98, 0, 0, 0, 0xa0, 0, 0, 0x90, 0xa0},
		"map Msg":             {0x98, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0x80},
		"reserved 0xc1":       {0x98, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xc1},
		"extra array":         {0x99, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0, 0x90},
		"extra map":           {0x99, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0, 0x80},
		"extra 0xc1":          {0x99, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0, 0xc1},
		"extra missing":       {0x99, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0},
		"huge array32":        {0xdd, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0, 0},
		"str32 beyond end":    {0x98, 0, 0, 0, 0xdb, 0xff, 0xff, 0xff, 0xff, 'a'},
		"bin16 beyond end":    {0x98, 0, 0, 0, 0xc5, 0, 9, 'a'},
		"extra ext beyond":    {0x99, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0, 0xc9, 0, 0, 0, 5, 1, 2},
		"extra fixext short":  {0x99, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0, 0xd8, 1, 2},
	}
	for i := range valid {
		cases[fmt.Sprintf("truncated at %d", i)] = valid[:i]
	}
	for name, b := range cases {
		h := Header{Name: "keep"}
		err := h.UnmarshalMsgpack(b)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s (% x): err = %v, want ErrMalformed", name, b, err)
		}
		if h.Name != "keep" {
			t.Errorf("%s: failed decode modified the header", name)
		}
	}
}

func TestHeaderAllocs(t *testing.T) {
	h := Header{To: 1, From: 2, Seq: 3, Name: "svc.method", Deadline: 1_750_000_000_000_000_000, Code: "E_CODE", Msg: "some message"}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = h.AppendMsgpack(buf[:0]) }); n != 0 {
		t.Errorf("AppendMsgpack: %v allocs, want 0", n)
	}
	numeric := (&Header{To: 1, From: 2, Seq: 3, Deadline: 4, Status: 1}).AppendMsgpack(nil)
	var got Header
	if n := testing.AllocsPerRun(100, func() { _ = got.UnmarshalMsgpack(numeric) }); n != 0 {
		t.Errorf("UnmarshalMsgpack without strings: %v allocs, want 0", n)
	}
	withStrings := h.AppendMsgpack(nil)
	if n := testing.AllocsPerRun(100, func() { _ = got.UnmarshalMsgpack(withStrings) }); n != 3 {
		t.Errorf("UnmarshalMsgpack with 3 strings: %v allocs, want 3", n)
	}
	tab := newStrTable()
	if n := testing.AllocsPerRun(100, func() { _ = got.unmarshal(withStrings, tab) }); n != 0 {
		t.Errorf("unmarshal with an intern table: %v allocs, want 0", n)
	}
	if got != h {
		t.Fatalf("got %+v, want %+v", got, h)
	}
}

func TestStrTable(t *testing.T) {
	tab := newStrTable()
	long := strings.Repeat("z", internMaxLen+1)
	for i := 0; i < 2000; i++ {
		s := strings.Repeat("k", i%100)
		if got := tab.str([]byte(s)); got != s {
			t.Fatalf("str(%q) = %q", s, got)
		}
	}
	if got := tab.str([]byte(long)); got != long {
		t.Fatal("long string mangled")
	}
	var nilTab *strTable
	if got := nilTab.str([]byte("abc")); got != "abc" {
		t.Fatal("nil table")
	}
}
