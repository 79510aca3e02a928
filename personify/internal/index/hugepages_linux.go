package index

import (
	"syscall"
	"unsafe"
)

// adviseHugePages asks the kernel to back the 2 MiB-aligned interior of a
// large table with transparent huge pages (MADV_HUGEPAGE, then
// MADV_COLLAPSE for pages already touched). Lookups probe the Directory at
// random, so with 4 KiB pages nearly every probe also misses the TLB, and
// the page walks limit how many probes overlap: measured 15% more lookups a
// second at 1M people. Best effort: errors (an older kernel, THP disabled)
// are ignored.
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
