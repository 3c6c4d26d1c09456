package responder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

type coded struct{}

func (coded) Error() string { return "quota exceeded" }
func (coded) Code() string  { return "quota" }

func TestErrorCode(t *testing.T) {
	for _, tc := range []struct {
		err       error
		code, msg string
	}{
		{Errorf("invalid_card", "card %q", "12"), "invalid_card", `card "12"`},
		{fmt.Errorf("wrapped: %w", &Error{Code: "c", Message: "m"}), "c", "m"},
		{coded{}, "quota", "quota exceeded"},
		{errors.New("plain"), "", "plain"},
	} {
		code, msg := errorCode(tc.err)
		if code != tc.code || msg != tc.msg {
			t.Errorf("errorCode(%v) = %q, %q; want %q, %q", tc.err, code, msg, tc.code, tc.msg)
		}
	}
}

func TestOnRejectsBadPatterns(t *testing.T) {
	r := &Responder{}
	for _, p := range []string{"", "a..b", "**.x", "a*"} {
		func() {
			defer func() {
				if e, ok := recover().(error); !ok || !errors.Is(e, ErrInvalidType) {
					t.Errorf("On(%q) did not panic with ErrInvalidType", p)
				}
			}()
			r.On(p, func(_ context.Context, _ *Request) (any, error) { return nil, nil })
		}()
	}
}

func TestRequestDecodeErrorWrapsErrDecode(t *testing.T) {
	var s struct{ N int }
	req := &Request{Type: "card.validate", payload: []byte{0xa3, 'a', 'b', 'c'}} // msgpack "abc"
	err := req.Decode(&s)
	if !errors.Is(err, ErrDecode) {
		t.Fatalf("Decode(string into struct) = %v, want ErrDecode", err)
	}
	if want := `"card.validate"`; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the type %s", err, want)
	}
	var truncated int
	if err := (&Request{Type: "t", payload: []byte{0xcd, 0x01}}).Decode(&truncated); !errors.Is(err, ErrDecode) {
		t.Fatalf("Decode(truncated uint16) = %v, want ErrDecode", err)
	}
	var n int
	if err := (&Request{Type: "t", payload: []byte{0x07}}).Decode(&n); err != nil || n != 7 {
		t.Fatalf("Decode(7) = %d, %v", n, err)
	}
}
