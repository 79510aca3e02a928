//go:build race

package anonymize

// raceEnabled is true under the race detector, which makes sync.Pool drop
// items on purpose, so pooled paths allocate there and nowhere else.
const raceEnabled = true
