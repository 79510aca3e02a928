//go:build amd64 || arm64

package index

import "unsafe"

// Prefetch asks the CPU to bring the cache line at addr closer, without
// waiting for it: bulk loads call it for the Directory slot of a key a few
// keys ahead, so that the random accesses of a batch overlap. (A plain load
// would block retirement until its miss resolved.) It has no effect on
// program state.
//
//go:noescape
func Prefetch(addr unsafe.Pointer)
