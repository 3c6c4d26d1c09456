package responder

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/requester"
)

// Handle's raw-bytes path (a []byte argument decoded without escaping, a
// []byte result encoded without an interface) answers exactly what the
// general path does: the same handler registered with On, which decodes
// with Request.Decode and returns its result as an any, gets the same
// replies and the same errors for bins, strings, nil, nothing and values
// that are not bytes.
func TestHandleBytesMatchesOn(t *testing.T) {
	r, req, ctx := pair(t, "bytes")
	echo := func(_ context.Context, b []byte) ([]byte, error) {
		switch string(b) {
		case "nil":
			return nil, nil
		case "empty":
			return []byte{}, nil
		}
		return b, nil
	}
	Handle(r, "typed", echo)
	r.On("plain", func(ctx context.Context, req *Request) (any, error) {
		var b []byte
		if err := req.Decode(&b); err != nil {
			return nil, &Error{Code: "bad_request", Message: err.Error()}
		}
		return echo(ctx, b)
	})
	for _, in := range []any{[]byte("raw bytes"), []byte{}, "a string", []byte("nil"), []byte("empty"), nil, 42, map[string]int{"a": 1}} {
		var got, want []byte
		gerr := req.Send(ctx, "typed", in, &got)
		werr := req.Send(ctx, "plain", in, &want)
		var gre, wre *requester.RemoteError
		if errors.As(gerr, &gre) != errors.As(werr, &wre) ||
			(gre != nil && (gre.Code != wre.Code || strings.ReplaceAll(gre.Message, `"typed"`, `"plain"`) != wre.Message)) {
			t.Fatalf("%#v: typed %v, plain %v", in, gerr, werr)
		}
		if (gerr == nil) != (werr == nil) || string(got) != string(want) || (got == nil) != (want == nil) {
			t.Fatalf("%#v: typed %q (%v), plain %q (%v)", in, got, gerr, want, werr)
		}
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// Handle refuses a nil function at once, as On refuses a nil handler.
func TestHandleNilPanics(t *testing.T) {
	r, err := New("nil", WithMesh(meshtest.Cluster(t, 1)[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	defer func() {
		if p := recover(); p == nil || !errors.Is(p.(error), ErrInvalidType) {
			t.Fatalf("Handle(nil) recovered %v, want a panic wrapping ErrInvalidType", p)
		}
	}()
	Handle[int, int](r, "x", nil)
}

// panicky panics when it is encoded.
type panicky struct{}

func (panicky) MarshalMsgpack() ([]byte, error) { panic("marshaler exploded") }

// A reply whose marshaler panics is a handler panic: the caller gets a
// remote error, and the responder keeps serving.
func TestPanickingReplyMarshalerIsRecovered(t *testing.T) {
	r, req, ctx := pair(t, "marshal")
	Handle(r, "boom", func(context.Context, int) (panicky, error) { return panicky{}, nil })
	Handle(r, "ok", func(_ context.Context, n int) (int, error) { return n + 1, nil })
	var re *requester.RemoteError
	if err := req.Send(ctx, "boom", 1, nil); !errors.As(err, &re) || re.Code != "panic" {
		t.Fatalf("boom: %v, want a remote error with code panic", err)
	}
	if n, err := requester.Call[int](ctx, req, "ok", 1); err != nil || n != 2 {
		t.Fatalf("ok after the panic: %d, %v", n, err)
	}
	if s := r.Stats(); s.Panics != 1 {
		t.Fatalf("%d panics counted, want 1", s.Panics)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// A reply that cannot be encoded reaches the caller as a remote error with
// code "encode", from a handler made by Handle as from one registered with
// On.
func TestUnencodableReplyIsAnEncodeError(t *testing.T) {
	r, req, ctx := pair(t, "encode")
	Handle(r, "typed", func(context.Context, int) (chan int, error) { return make(chan int), nil })
	r.On("plain", func(context.Context, *Request) (any, error) { return func() {}, nil })
	for _, typ := range []string{"typed", "plain"} {
		var re *requester.RemoteError
		if err := req.Send(ctx, typ, 1, nil); !errors.As(err, &re) || re.Code != "encode" {
			t.Fatalf("%s: %v, want a remote error with code encode", typ, err)
		}
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
