package chart

import "strconv"

// durationUnits are the human units for nanosecond values.
var durationUnits = []struct {
	ns   float64
	name string
}{{1, "ns"}, {1e3, "µs"}, {1e6, "ms"}, {1e9, "s"}}

// FormatValue prints v to three significant digits: nanoseconds in the
// largest duration unit that keeps the number at least 1, anything else as
// a plain number followed by unit.
func FormatValue(v float64, unit string) string {
	if unit != "ns" {
		s := formatNumber(round3(v))
		if unit == "" {
			return s
		}
		return s + " " + unit
	}
	i := 0
	for i+1 < len(durationUnits) && v >= durationUnits[i+1].ns {
		i++
	}
	r := round3(v / durationUnits[i].ns)
	if r >= 1000 && i+1 < len(durationUnits) { // 999.7 ns rounds to 1 µs, not 1000 ns
		i++
		r = round3(v / durationUnits[i].ns)
	}
	return formatNumber(r) + " " + durationUnits[i].name
}

// round3 rounds v to three significant digits.
func round3(v float64) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'e', 2, 64), 64)
	return r
}

// formatNumber prints v in positional notation with no trailing zeros.
func formatNumber(v float64) string {
	return strconv.FormatFloat(v, 'f', -1, 64)
}
