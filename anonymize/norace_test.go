//go:build !race

package anonymize

const raceEnabled = false
