package chart

import "math"

// scale maps values to x pixels on a log10 axis spanning whole decades.
type scale struct {
	lo, hi      int     // exponents of the axis ends, lo < hi
	left, right float64 // pixels of the axis ends
}

// newScale fits the axis to bars: from the largest power of ten strictly
// below the smallest value, so even that bar has a visible length, up to
// the smallest power of ten at or above the largest.
func newScale(bars []Bar, left, right float64) scale {
	minV, maxV := bars[0].Value, bars[0].Value
	for _, b := range bars[1:] {
		minV, maxV = min(minV, b.Value), max(maxV, b.Value)
	}
	lo := floorExp(minV)
	if math.Pow10(lo) == minV {
		lo--
	}
	hi := floorExp(maxV)
	if math.Pow10(hi) < maxV {
		hi++
	}
	return scale{lo: lo, hi: max(hi, lo+1), left: left, right: right}
}

// floorExp returns the largest e with 10^e <= v, correcting math.Log10's
// rounding near exact powers of ten.
func floorExp(v float64) int {
	e := int(math.Floor(math.Log10(v)))
	for math.Pow10(e) > v {
		e--
	}
	for math.Pow10(e+1) <= v {
		e++
	}
	return e
}

// x returns the pixel position of v.
func (s scale) x(v float64) float64 {
	return s.xExp(math.Log10(v))
}

// xExp returns the pixel position of 10^e. Ticks use it directly, since
// 10^e underflows to 0 for the lowest exponents a float64 value can have.
func (s scale) xExp(e float64) float64 {
	return s.left + (e-float64(s.lo))*s.perDecade()
}

// perDecade returns the pixels between adjacent powers of ten.
func (s scale) perDecade() float64 {
	return (s.right - s.left) / float64(s.hi-s.lo)
}
