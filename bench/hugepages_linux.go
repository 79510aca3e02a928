package bench

import (
	"syscall"
	"unsafe"
)

// adviseHugePages backs the 2 MiB-aligned interior of a table with
// transparent huge pages, as the engine does for its directory, so that
// the floor table pays the same TLB costs. Best effort.
func adviseHugePages(p unsafe.Pointer, size uintptr) {
	const huge = 2 << 20
	start := (uintptr(p) + huge - 1) &^ (huge - 1)
	end := (uintptr(p) + size) &^ (huge - 1)
	if end <= start {
		return
	}
	b := unsafe.Slice((*byte)(p), size)[start-uintptr(p) : end-uintptr(p)]
	const madvHugepage, madvCollapse = 14, 25
	_ = syscall.Madvise(b, madvHugepage)
	_ = syscall.Madvise(b, madvCollapse)
}
