// Package bench holds personify's comparison benchmarks and the benchmark
// report. It is a nested module, so that the peers it compares against
// (Redis clients and the like) never reach the library's go.mod.
package bench
