package main

import (
	"strings"
	"testing"
)

func TestCheckCard(t *testing.T) {
	for _, tc := range []struct {
		card string
		want string // substring of the reason; "" means valid
	}{
		{"123456", ""},
		{"4111111111111111", ""},
		{"1234567890123456789", ""},
		{"12345", "has 5 digits"},
		{"12345678901234567890", "has 20 digits"},
		{"", "has 0 digits"},
		{"12ab56", `has 'a' at position 3`},
		{"4111-1111-1111", `has '-' at position 5`},
		{"é23456", `has 'é' at position 1`},
		{strings.Repeat("x", 100), "..."},
	} {
		got := checkCard(tc.card)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("checkCard(%q) = %q, want %q", tc.card, got, tc.want)
		}
	}
}
