package chart

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{10, "ns", "10 ns"},
		{12.345, "ns", "12.3 ns"},
		{0.5, "ns", "0.5 ns"},
		{0.1, "ns", "0.1 ns"},
		{999.4, "ns", "999 ns"},
		{999.7, "ns", "1 µs"}, // rounds up into the next unit
		{1000, "ns", "1 µs"},
		{1234, "ns", "1.23 µs"},
		{99_950, "ns", "100 µs"},
		{1e6, "ns", "1 ms"},
		{2.5e9, "ns", "2.5 s"},
		{5e12, "ns", "5000 s"}, // seconds are the largest unit
		{48, "B/op", "48 B/op"},
		{1_234_567, "B/op", "1230000 B/op"},
		{0.000123456, "x", "0.000123 x"},
		{42, "", "42"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			assert.Equal(t, tc.want, FormatValue(tc.v, tc.unit))
		})
	}
}

func TestFloorExp(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want int
	}{
		{1, 0}, {9.99, 0}, {10, 1}, {1000, 3}, {999.999, 2},
		{1e-3, -3}, {0.0999, -2}, {1e15, 15}, {1e-300, -300},
	} {
		assert.Equal(t, tc.want, floorExp(tc.v), "floorExp(%v)", tc.v)
	}
}

func TestNewScale(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []float64
		lo, hi int
	}{
		{"power-of-ten-min-gets-a-decade", []float64{10, 1000}, 0, 3},
		{"inside-decades", []float64{15, 1001}, 1, 4},
		{"one-value", []float64{100}, 1, 2},
		{"one-value-inside", []float64{42}, 1, 2},
		{"sub-unit", []float64{0.25, 0.5}, -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bars := make([]Bar, len(tc.values))
			for i, v := range tc.values {
				bars[i] = Bar{Value: v}
			}
			s := newScale(bars, 100, 700)
			assert.Equal(t, tc.lo, s.lo, "lo")
			assert.Equal(t, tc.hi, s.hi, "hi")
			assert.InDelta(t, 100, s.x(math.Pow10(s.lo)), 1e-9)
			assert.InDelta(t, 700, s.x(math.Pow10(s.hi)), 1e-9)
		})
	}
}
