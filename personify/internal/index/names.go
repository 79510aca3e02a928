package index

import "unsafe"

// Names maps segment names to ids, for In's segment argument (the engine
// builds it from its definitions): Go's
// map with string keys spent about 30 ns a lookup here (generic hashing and
// a memequal call), a third of In. Names are keyed by two 8-byte words
// (their first and last 8 bytes, overlapping, or the bytes themselves when
// shorter) and their length: hashing is a multiply, comparing two words,
// exact for names up to 16 bytes; longer names also compare the string.
// Open addressing over a power-of-two table a third full. Immutable.
type Names struct {
	slots []nameSlot
	shift uint
}

type nameSlot struct {
	a, b uint64
	n    int
	id   uint32
	name string
}

// nameKey returns the two words and the length that key a name.
func nameKey(s string) (a, b uint64, n int) {
	n = len(s)
	p := unsafe.Pointer(unsafe.StringData(s))
	switch {
	case n >= 8: // first and last 8 bytes, overlapping
		return *(*uint64)(p), *(*uint64)(unsafe.Add(p, n-8)), n
	case n >= 4: // first and last 4 bytes, overlapping
		return uint64(*(*uint32)(p)) | uint64(*(*uint32)(unsafe.Add(p, n-4)))<<32, 0, n
	}
	for i := n - 1; i >= 0; i-- {
		a = a<<8 | uint64(s[i])
	}
	return a, 0, n
}

func (t *Names) home(a, b uint64, n int) uint64 {
	return ((a^uint64(n))*0x9E3779B97F4A7C15 ^ b*0xC2B2AE3D27D4EB4F) >> t.shift
}

// NewNames builds the table of names to ids.
func NewNames(ids map[string]uint32) Names {
	size, shift := 8, uint(61)
	for size < 3*len(ids) {
		size, shift = size*2, shift-1
	}
	t := Names{slots: make([]nameSlot, size), shift: shift}
	for name, id := range ids {
		a, b, n := nameKey(name)
		i := t.home(a, b, n)
		for t.slots[i].n != 0 {
			i = (i + 1) & uint64(size-1)
		}
		t.slots[i] = nameSlot{a, b, n, id, name}
	}
	return t
}

// Get returns the id of a segment name. Names are never empty.
func (t *Names) Get(name string) (uint32, bool) {
	a, b, n := nameKey(name)
	mask := uint64(len(t.slots) - 1)
	for i := t.home(a, b, n) & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		// Up to 16 bytes the two words are the whole name; longer names
		// that share their first and last 8 bytes are told apart by
		// comparing them, and the probe goes on past a mismatch.
		if s.a == a && s.b == b && s.n == n && n != 0 && (n <= 16 || s.name == name) {
			return s.id, true
		}
		if s.n == 0 {
			return 0, false
		}
	}
}
