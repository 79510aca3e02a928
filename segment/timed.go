package segment

import (
	"cmp"
	"fmt"
	"iter"
	"slices"
	"time"
)

// Limits on Timed's arithmetic, which works in Unix nanoseconds: epochs up
// to 2^62 ns (about 146 years), and times clamped to within 2^62 ns of 1970
// (late 1823 to early 2116), so that no epoch start overflows.
const (
	maxEpoch  = time.Duration(1 << 62)
	timeLimit = int64(1 << 62)
)

// A Timed is a set whose members carry the time they were last added, so
// that memberships can expire. Times are bucketed into epochs of a fixed
// length counted from the Unix epoch (floor division, so times before 1970
// work too): a member added at time a is recorded in the epoch that contains
// a, with the recorded time start(epoch) <= a. Each member is in exactly one
// epoch bucket; adding it again moves it to the newer epoch, while adding it
// with a time older than its record keeps the newer record.
//
// Because a membership is recorded at its epoch's start, ExpireBefore is
// never late: it drops a membership at most one epoch early relative to the
// exact time it was added, never after its retention ends. Times before
// late 1823 or after early 2116 are clamped to those bounds.
//
// The zero Timed is not usable (its methods panic): use NewTimed. A Timed is
// not safe for concurrent use when any goroutine mutates it; any number of
// goroutines may call its read methods on a Timed that no goroutine mutates.
type Timed struct {
	epoch   int64    // nanoseconds, > 0
	members Set      // the union of the buckets
	buckets []bucket // ascending by start; none empty; pairwise disjoint
}

// bucket holds the members whose recorded time is start (Unix nanoseconds).
type bucket struct {
	start int64
	set   *Set
}

// NewTimed returns an empty Timed with the given epoch length. It panics if
// epoch is not positive or is over 2^62 ns (about 146 years).
func NewTimed(epoch time.Duration) *Timed {
	if epoch <= 0 || epoch > maxEpoch {
		panic(fmt.Sprintf("segment: NewTimed: epoch %v out of range (0, 2^62ns]", epoch))
	}
	return &Timed{epoch: int64(epoch)}
}

// Epoch returns the epoch length.
func (t *Timed) Epoch() time.Duration {
	return time.Duration(t.epoch)
}

// startOf returns the start of the epoch containing at, in Unix nanoseconds.
func (t *Timed) startOf(at time.Time) int64 {
	if t.epoch == 0 {
		panic("segment: Timed used without NewTimed")
	}
	ns := unixNano(at)
	r := ns % t.epoch
	if r < 0 {
		r += t.epoch
	}
	return ns - r
}

// unixNano returns at in Unix nanoseconds, clamped to ±timeLimit.
func unixNano(at time.Time) int64 {
	const limitSec = timeLimit / int64(time.Second)
	switch sec := at.Unix(); {
	case sec >= limitSec:
		return timeLimit
	case sec <= -limitSec:
		return -timeLimit
	default:
		return min(max(sec*int64(time.Second)+int64(at.Nanosecond()), -timeLimit), timeLimit)
	}
}

func timeOf(ns int64) time.Time {
	return time.Unix(0, ns).UTC()
}

// Add records x as added at time at.
func (t *Timed) Add(x uint32, at time.Time) {
	start := t.startOf(at)
	if !t.members.Add(x) {
		i := t.find(x)
		if t.buckets[i].start >= start {
			return
		}
		t.removeFrom(i, x)
	}
	if i, ok := t.search(start); ok {
		t.buckets[i].set.Add(x)
	} else {
		t.buckets = slices.Insert(t.buckets, i, bucket{start: start, set: New(x)})
	}
}

// AddMany records every element of xs as added at time at. It never
// modifies xs.
func (t *Timed) AddMany(xs []uint32, at time.Time) {
	t.addOwned(New(xs...), t.startOf(at))
}

// AddSet records every member of s as added at time at. It does not modify
// s. Loading a snapshot bucket by bucket is AddSet with each bucket's time.
func (t *Timed) AddSet(s *Set, at time.Time) {
	t.addOwned(s.Clone(), t.startOf(at))
}

// addOwned adds the members of n, which it takes ownership of, at start.
// Bitmap operations only touch buckets n intersects.
func (t *Timed) addOwned(n *Set, start int64) {
	if n.IsEmpty() {
		return
	}
	if t.members.Intersects(n) {
		// Newer records win: drop those members from n, then move the rest
		// out of older buckets.
		i, _ := t.search(start + 1)
		for _, b := range t.buckets[i:] {
			if b.set.Intersects(n) {
				n.AndNot(b.set)
			}
		}
		if n.IsEmpty() {
			return
		}
		j, _ := t.search(start)
		for _, b := range t.buckets[:j] {
			if b.set.Intersects(n) {
				b.set.AndNot(n)
			}
		}
		t.dropEmpty()
	}
	t.members.Or(n)
	if i, ok := t.search(start); ok {
		t.buckets[i].set.Or(n)
	} else {
		t.buckets = slices.Insert(t.buckets, i, bucket{start: start, set: n})
	}
}

// Remove removes x and reports whether it was a member.
func (t *Timed) Remove(x uint32) bool {
	if !t.members.Remove(x) {
		return false
	}
	t.removeFrom(t.find(x), x)
	return true
}

// RemoveMany removes every element of xs. It never modifies xs.
func (t *Timed) RemoveMany(xs []uint32) {
	n := New(xs...)
	if !t.members.Intersects(n) {
		return
	}
	t.members.AndNot(n)
	for _, b := range t.buckets {
		if b.set.Intersects(n) {
			b.set.AndNot(n)
		}
	}
	t.dropEmpty()
}

// Contains reports whether x is a member: one bitmap lookup, as fast as a
// Set's.
func (t *Timed) Contains(x uint32) bool {
	return t.members.Contains(x)
}

// Len returns the number of members.
func (t *Timed) Len() int {
	return t.members.Len()
}

// AddedAt returns the recorded time of x (the start of the epoch it was last
// added in, in UTC); ok is false when x is not a member.
func (t *Timed) AddedAt(x uint32) (at time.Time, ok bool) {
	if !t.members.Contains(x) {
		return time.Time{}, false
	}
	return timeOf(t.buckets[t.find(x)].start), true
}

// Oldest returns the recorded time of the oldest members; ok is false when
// there are none.
func (t *Timed) Oldest() (at time.Time, ok bool) {
	if len(t.buckets) == 0 {
		return time.Time{}, false
	}
	return timeOf(t.buckets[0].start), true
}

// ExpireBefore removes every member whose recorded time is strictly before
// cutoff and returns them as a new set (empty, not nil, when there are none).
// Its cost is proportional to the expired buckets, not to the whole set.
func (t *Timed) ExpireBefore(cutoff time.Time) *Set {
	k, _ := t.search(unixNano(cutoff))
	expired := t.buckets[:k]
	var out *Set
	switch len(expired) {
	case 0:
		return new(Set)
	case len(t.buckets):
		t.members.Clear()
	default:
		for _, b := range expired {
			t.members.AndNot(b.set)
		}
	}
	if len(expired) == 1 {
		out = expired[0].set // the bucket leaves t, so it needs no copy
	} else {
		sets := make([]*Set, len(expired))
		for i, b := range expired {
			sets[i] = b.set
		}
		out = Or(sets...)
	}
	t.buckets = slices.Delete(t.buckets, 0, k)
	return out
}

// Members returns the set of all members. It is a view, not a copy: it
// changes as t does, and modifying it corrupts t.
func (t *Timed) Members() *Set {
	return &t.members
}

// Epochs returns an iterator over the non-empty epochs, oldest first: each
// epoch's start (UTC) and its members. The sets are views: modifying them
// corrupts t, and t must not be modified during the iteration.
func (t *Timed) Epochs() iter.Seq2[time.Time, *Set] {
	return func(yield func(time.Time, *Set) bool) {
		for _, b := range t.buckets {
			if !yield(timeOf(b.start), b.set) {
				return
			}
		}
	}
}

// Clone returns an independent copy of t.
func (t *Timed) Clone() *Timed {
	c := &Timed{epoch: t.epoch, buckets: make([]bucket, len(t.buckets))}
	c.members.bm = *t.members.bm.Clone()
	for i, b := range t.buckets {
		c.buckets[i] = bucket{start: b.start, set: b.set.Clone()}
	}
	return c
}

// appendBucket adds a decoded bucket, which t takes ownership of. It must
// be non-empty, aligned to the epoch, newer than every bucket so far and
// disjoint from them; it returns a description of the problem otherwise.
func (t *Timed) appendBucket(start int64, s *Set) string {
	switch {
	case start < -timeLimit || start > timeLimit || t.startOf(timeOf(start)) != start:
		return fmt.Sprintf("bucket start %d is not an epoch start", start)
	case len(t.buckets) > 0 && start <= t.buckets[len(t.buckets)-1].start:
		return fmt.Sprintf("bucket start %d not after the previous bucket's", start)
	case s.IsEmpty():
		return "empty bucket"
	case t.members.Intersects(s):
		return "bucket overlaps an earlier bucket"
	}
	t.members.Or(s)
	t.buckets = append(t.buckets, bucket{start: start, set: s})
	return ""
}

// search returns the index of the bucket starting at start, or where it
// would be inserted.
func (t *Timed) search(start int64) (int, bool) {
	return slices.BinarySearchFunc(t.buckets, start, func(b bucket, s int64) int {
		return cmp.Compare(b.start, s)
	})
}

// find returns the index of the bucket holding x, which must be a member.
// Recent buckets are searched first.
func (t *Timed) find(x uint32) int {
	for i := len(t.buckets) - 1; i >= 0; i-- {
		if t.buckets[i].set.Contains(x) {
			return i
		}
	}
	panic("segment: Timed buckets out of sync with members")
}

// removeFrom removes x from bucket i, dropping the bucket if it empties.
func (t *Timed) removeFrom(i int, x uint32) {
	b := t.buckets[i].set
	b.Remove(x)
	if b.IsEmpty() {
		t.buckets = slices.Delete(t.buckets, i, i+1)
	}
}

// dropEmpty removes empty buckets.
func (t *Timed) dropEmpty() {
	t.buckets = slices.DeleteFunc(t.buckets, func(b bucket) bool { return b.set.IsEmpty() })
}
