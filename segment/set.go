package segment

import (
	"cmp"
	"iter"
	"slices"

	"github.com/RoaringBitmap/roaring/v2"
)

// A Set is a set of member ordinals, stored as a Roaring bitmap. It is
// compact and fast when members are dense (ordinals handed out from 0 up) and
// supports fast set algebra.
//
// The zero Set is an empty set ready to use. A Set must not be copied after
// first use; use Clone. The read methods accept a nil *Set as the empty set,
// and so does every *Set argument in this package.
//
// A Set is not safe for concurrent use when any goroutine mutates it; any
// number of goroutines may call its read methods on a Set that no goroutine
// mutates.
type Set struct {
	_  noCopy
	bm roaring.Bitmap // copy-on-write is never enabled (roaring issue #528)
}

// noCopy makes go vet's copylocks check flag copies of a Set.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

// emptyBitmap stands in for a nil *Set. Nothing ever mutates it.
var emptyBitmap = roaring.New()

// New returns a set holding members, which may be in any order and repeat.
func New(members ...uint32) *Set {
	s := new(Set)
	s.AddMany(members)
	return s
}

// fromBitmap wraps a bitmap that nothing else references.
func fromBitmap(bm *roaring.Bitmap) *Set {
	s := new(Set)
	s.bm = *bm
	return s
}

// bitmap returns the set's bitmap for reading, the empty one for a nil set.
func (s *Set) bitmap() *roaring.Bitmap {
	if s == nil {
		return emptyBitmap
	}
	return &s.bm
}

// Add adds x and reports whether it was not already a member.
func (s *Set) Add(x uint32) bool {
	return s.bm.CheckedAdd(x)
}

// AddMany adds every element of xs, which may be in any order and repeat.
// It never modifies xs. Unsorted input is radix-sorted in a private copy
// first (transient memory: 8 bytes per element), which makes it several
// times faster than adding in arrival order; sorted input is added directly.
func (s *Set) AddMany(xs []uint32) {
	sorted := xs
	if len(xs) >= sortThreshold && !slices.IsSorted(xs) {
		buf := make([]uint32, 2*len(xs))
		sorted = buf[:len(xs)]
		copy(sorted, xs)
		radixSort(sorted, buf[len(xs):])
	}
	if len(sorted) < sortThreshold || s.bm.IsEmpty() {
		s.bm.AddMany(sorted)
		return
	}
	// Into a non-empty set, roaring adds sorted values one at a time, each
	// a binary search and a memmove in its array container; a bitmap of the
	// batch, built by appending, merges in linear time.
	var batch roaring.Bitmap
	batch.AddMany(sorted)
	s.bm.Or(&batch)
}

// AddRange adds every x with lo <= x < hi. It does nothing when hi <= lo.
func (s *Set) AddRange(lo, hi uint32) {
	if hi > lo {
		s.bm.AddRange(uint64(lo), uint64(hi))
	}
}

// Remove removes x and reports whether it was a member.
func (s *Set) Remove(x uint32) bool {
	return s.bm.CheckedRemove(x)
}

// RemoveMany removes every element of xs, which may be in any order. It
// never modifies xs.
func (s *Set) RemoveMany(xs []uint32) {
	if len(xs) < sortThreshold {
		for _, x := range xs {
			s.bm.Remove(x)
		}
		return
	}
	s.AndNot(New(xs...))
}

// Contains reports whether x is a member.
func (s *Set) Contains(x uint32) bool {
	if s == nil {
		return false
	}
	return s.bm.Contains(x)
}

// Len returns the number of members.
func (s *Set) Len() int {
	return int(s.bitmap().GetCardinality())
}

// IsEmpty reports whether the set has no members.
func (s *Set) IsEmpty() bool {
	return s.bitmap().IsEmpty()
}

// Min returns the smallest member; ok is false when the set is empty.
func (s *Set) Min() (x uint32, ok bool) {
	bm := s.bitmap()
	if bm.IsEmpty() {
		return 0, false
	}
	return bm.Minimum(), true
}

// Max returns the largest member; ok is false when the set is empty.
func (s *Set) Max() (x uint32, ok bool) {
	bm := s.bitmap()
	if bm.IsEmpty() {
		return 0, false
	}
	return bm.Maximum(), true
}

// All returns an iterator over the members in ascending order. The set must
// not be modified during the iteration.
func (s *Set) All() iter.Seq[uint32] {
	bm := s.bitmap()
	return func(yield func(uint32) bool) {
		bm.Iterate(yield)
	}
}

// AppendTo appends the members in ascending order to dst and returns the
// extended slice.
func (s *Set) AppendTo(dst []uint32) []uint32 {
	bm := s.bitmap()
	n := int(bm.GetCardinality())
	dst = slices.Grow(dst, n)
	tail := dst[len(dst) : len(dst)+n]
	bm.ToExistingArray(&tail)
	return dst[:len(dst)+n]
}

// Clone returns an independent copy of s (a new empty set for a nil s).
func (s *Set) Clone() *Set {
	return fromBitmap(s.bitmap().Clone())
}

// Equal reports whether s and o have the same members.
func (s *Set) Equal(o *Set) bool {
	return s.bitmap().Equals(o.bitmap())
}

// Clear removes every member, keeping some memory for reuse.
func (s *Set) Clear() {
	s.bm.Clear()
}

// Optimize run-length encodes the containers where that is smaller and
// releases spare capacity, by copying the set. Call it after a bulk load or
// before publishing a set that will only be read, not after every change.
func (s *Set) Optimize() {
	s.bm.RunOptimize()
	s.bm = *s.bm.Clone()
}

// SizeBytes estimates the memory the set's bitmap uses, in bytes.
func (s *Set) SizeBytes() uint64 {
	return s.bitmap().GetSizeInBytes()
}

// SerializedSize returns the exact number of bytes WriteTo and MarshalBinary
// produce for s.
func (s *Set) SerializedSize() uint64 {
	return s.bitmap().GetSerializedSizeInBytes()
}

// And removes from s every member that is not in o.
func (s *Set) And(o *Set) {
	switch o {
	case nil:
		s.bm.Clear()
	case s:
	default:
		s.bm.And(&o.bm)
	}
}

// Or adds every member of o to s.
func (s *Set) Or(o *Set) {
	if o != nil && o != s {
		s.bm.Or(&o.bm)
	}
}

// AndNot removes every member of o from s.
func (s *Set) AndNot(o *Set) {
	switch o {
	case nil:
	case s:
		s.bm.Clear()
	default:
		s.bm.AndNot(&o.bm)
	}
}

// Xor makes s the members that are in exactly one of s and o.
func (s *Set) Xor(o *Set) {
	switch o {
	case nil:
	case s:
		s.bm.Clear()
	default:
		// Not roaring's in-place Xor: in v2.30.0 it modifies its argument
		// and shares a container with it when an array or run container
		// meets a bitmap container (RoaringBitmap/roaring PR #564).
		s.bm = *roaring.Xor(&s.bm, &o.bm)
	}
}

// AndLen returns the number of members s and o have in common, without
// building their intersection.
func (s *Set) AndLen(o *Set) int {
	return int(s.bitmap().AndCardinality(o.bitmap()))
}

// Intersects reports whether s and o have a member in common.
func (s *Set) Intersects(o *Set) bool {
	return s.bitmap().Intersects(o.bitmap())
}

// And returns a new set holding the members common to all sets. Its inputs
// are not modified. A nil set is empty, so it makes the result empty; And of
// no sets is the empty set (there is no universe to return).
func And(sets ...*Set) *Set {
	if len(sets) == 0 {
		return new(Set)
	}
	bms := make([]*roaring.Bitmap, len(sets))
	for i, s := range sets {
		if s.IsEmpty() {
			return new(Set)
		}
		bms[i] = &s.bm
	}
	// Intersecting the smallest first keeps every intermediate result small.
	slices.SortFunc(bms, func(a, b *roaring.Bitmap) int {
		return cmp.Compare(a.GetCardinality(), b.GetCardinality())
	})
	return fromBitmap(roaring.FastAnd(bms...))
}

// Or returns a new set holding the members of any of sets. Its inputs are not
// modified; nil sets are empty.
func Or(sets ...*Set) *Set {
	bms := nonEmpty(sets)
	switch len(bms) {
	case 0:
		return new(Set)
	case 2: // FastOr's lazy union costs more than it saves for two
		return fromBitmap(roaring.Or(bms[0], bms[1]))
	}
	return fromBitmap(roaring.FastOr(bms...))
}

// Xor returns a new set holding the members that are in an odd number of
// sets. Its inputs are not modified; nil sets are empty.
func Xor(sets ...*Set) *Set {
	bms := nonEmpty(sets)
	switch len(bms) {
	case 0:
		return new(Set)
	case 1:
		return fromBitmap(bms[0].Clone())
	}
	acc := roaring.Xor(bms[0], bms[1])
	for _, bm := range bms[2:] {
		acc = roaring.Xor(acc, bm) // not in place: see (*Set).Xor
	}
	return fromBitmap(acc)
}

// nonEmpty returns the bitmaps of the non-empty sets.
func nonEmpty(sets []*Set) []*roaring.Bitmap {
	bms := make([]*roaring.Bitmap, 0, len(sets))
	for _, s := range sets {
		if !s.IsEmpty() {
			bms = append(bms, &s.bm)
		}
	}
	return bms
}

// sortThreshold is the input length below which AddMany and RemoveMany work
// element by element: sorting only pays for itself on larger inputs.
const sortThreshold = 512

// radixSort sorts xs in ascending order using tmp (len(tmp) >= len(xs)) as
// scratch: an LSD radix sort on three 11-bit digits. A digit that is the
// same for every element costs no pass, so small value ranges sort in one or
// two passes. It is much faster than a comparison sort on the large,
// shuffled inputs that bulk loads bring, and sorted input lets Roaring build
// each container by appending instead of inserting in the middle.
func radixSort(xs, tmp []uint32) {
	if len(xs) < 2 {
		return
	}
	const bits, mask = 11, 1<<11 - 1
	var counts [3][1 << bits]uint32
	for _, x := range xs {
		counts[0][x&mask]++
		counts[1][x>>bits&mask]++
		counts[2][x>>(2*bits)]++
	}
	src, dst := xs, tmp[:len(xs)]
	for pass := range counts {
		c := &counts[pass]
		if int(c[digit(src[0], pass)]) == len(xs) {
			continue // every element has this digit: the pass would not move anything
		}
		var sum uint32
		for i, n := range c {
			c[i] = sum
			sum += n
		}
		for _, x := range src {
			d := digit(x, pass)
			dst[c[d]] = x
			c[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &xs[0] {
		copy(xs, src)
	}
}

func digit(x uint32, pass int) uint32 {
	return x >> (11 * uint(pass)) & (1<<11 - 1)
}
