package codec

import (
	"errors"
	"testing"
)

type card struct {
	Number string `json:"number"`
	Amount int    `json:"amount,omitempty"`
}

func TestRoundTripJSONTags(t *testing.T) {
	b, err := Marshal(card{Number: "123456", Amount: 5})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["number"] != "123456" {
		t.Fatalf("json tag not used: %v", m)
	}
	var c card
	if err := Unmarshal(b, &c); err != nil || c.Number != "123456" || c.Amount != 5 {
		t.Fatalf("got %+v, %v", c, err)
	}
}

func TestDecodeError(t *testing.T) {
	b, _ := Marshal("text")
	var n int
	if err := Unmarshal(b, &n); !errors.Is(err, ErrDecode) {
		t.Fatalf("err = %v, want ErrDecode", err)
	}
	if err := Unmarshal([]byte{0xc1}, &n); !errors.Is(err, ErrDecode) {
		t.Fatalf("err = %v, want ErrDecode", err)
	}
}

func TestNil(t *testing.T) {
	b, err := Encode(nil)
	if err != nil || len(b.Bytes()) != 0 {
		t.Fatalf("nil encodes to %v, %v", b.Bytes(), err)
	}
	b.Release()
	var s string
	if err := Unmarshal(nil, &s); err != nil {
		t.Fatal(err)
	}
}
