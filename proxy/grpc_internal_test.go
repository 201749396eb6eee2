package proxy

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestParseGRPCTimeout(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true},
		{"200m", 200 * time.Millisecond, true},
		{"5u", 5 * time.Microsecond, true},
		{"7n", 7, true},
		{"2M", 2 * time.Minute, true},
		{"99999999H", 1<<63 - 1, true},
		{"12345678m", 12345678 * time.Millisecond, true},
		{"123456789m", 0, false}, // nine digits
		{"", 0, false},
		{"S", 0, false},
		{"10", 0, false},
		{"10s", 0, false},
		{"-1S", 0, false},
		{"1 S", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseGRPCTimeout([]string{tt.in})
		assert.Equal(t, tt.ok, ok, "%q", tt.in)
		assert.Equal(t, tt.want, got, "%q", tt.in)
	}
	_, ok := parseGRPCTimeout([]string{"1S", "2S"})
	assert.False(t, ok, "two fields are ambiguous")
}

func FuzzParseGRPCTimeout(f *testing.F) {
	for _, s := range []string{"1S", "200m", "99999999H", "0n", "12345678M", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseGRPCTimeout([]string{s})
		if !ok {
			return
		}
		if d < 0 {
			t.Fatalf("%q parsed to a negative %v", s, d)
		}
		if len(s) < 2 || len(s) > 9 {
			t.Fatalf("%q accepted with length %d", s, len(s))
		}
	})
}
