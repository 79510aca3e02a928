package index

import "math/bits"

// CodeEF is the lane code of an entry whose ids are inline as Elias-Fano
// instead of fixed-width lanes: for people in more segments than lanes
// hold (more than 12 of 1,000 segments, a person in five at 10 segments
// on average), up to 16 ids inline while n*l fits 96 bits (16 ids below
// 1,024, 13 below 2,048, and fewer as ids grow). Measured at 10M x 1000, the share of
// people with an overflow record (a second miss for Segments) drops from
// 21% to 3%.
//
// The 128 bits of lo and hi, as one number lo | hi<<64: bits 0-95 hold
// the ids' low l bits, id i at bit l*i; bits 96-127 (hi's high half) hold
// the high parts in unary: id i, whose high part is id >> l (below 16),
// sets bit high+i. The count field of the meta word holds l (so that an
// id's high part is below 16 and n*l fits 96 bits); the count of ids is
// the number of bits set in the high half.
const CodeEF = 5

// efMaxIDs and efLowBits bound an Elias-Fano entry: 16 ids (16 high
// parts and 16 ids take the 32 unary bits), low parts of up to 15 bits
// (the count field's).
const (
	efMaxIDs  = 16
	efMaxLow  = 15
	efLowBits = 96
)

// packEF encodes sorted, distinct ids as Elias-Fano, and reports false if
// they do not fit.
func packEF(ids []uint32) (lo, hi uint64, l uint, ok bool) {
	n := len(ids)
	if n == 0 || n > efMaxIDs {
		return 0, 0, 0, false
	}
	top := ids[n-1]
	if w := bits.Len32(top); w > 4 {
		l = uint(w - 4)
	}
	if l > efMaxLow || uint(n)*l > efLowBits {
		return 0, 0, 0, false
	}
	mask := uint64(1)<<l - 1
	for i, id := range ids {
		low, s := uint64(id)&mask, uint(i)*l
		if s < 64 {
			lo |= low << s
			if s+l > 64 {
				hi |= low >> (64 - s)
			}
		} else {
			hi |= low << (s - 64)
		}
		hi |= 1 << (32 + uint(id>>l) + uint(i))
	}
	return lo, hi, l, true
}

// efLow returns the low part of id number i of an Elias-Fano entry.
func efLow(lo, hi uint64, i int, l uint) uint64 {
	s := uint(i) * l
	var x uint64
	if s < 64 {
		x = lo>>s | hi<<(64-s) // hi<<64 is 0
	} else {
		x = hi >> (s - 64)
	}
	return x & (1<<l - 1)
}

// EFDecode writes the ids of an Elias-Fano entry (lo, hi, low bits l) to
// dst, which has room for 16, and returns how many.
func EFDecode(dst []uint32, lo, hi uint64, l uint) int {
	up := hi >> 32
	n := 0
	for ; up != 0 && n < len(dst); n++ {
		p := bits.TrailingZeros64(up)
		up &= up - 1
		dst[n] = uint32(uint64(p-n)<<l | efLow(lo, hi, n, l))
	}
	return n
}

// EFHas reports whether an Elias-Fano entry (lo, hi, low bits l) holds
// id: the ids of id's high part lie between the unary zeros that end the
// part before it and its own, so In compares a few low parts, none for
// most segments.
func EFHas(lo, hi uint64, l uint, id uint32) bool {
	h := id >> l
	if h >= 16 {
		return false
	}
	z := ^uint32(hi >> 32) // the zeros end each high part's run of ones
	start := 0
	for range h {
		start = bits.TrailingZeros32(z) + 1
		z &= z - 1
	}
	end := bits.TrailingZeros32(z)
	low := uint64(id) & (1<<l - 1)
	for p := start; p < end; p++ {
		if efLow(lo, hi, p-int(h), l) == low {
			return true
		}
	}
	return false
}

// PackInline encodes an inline entry of sorted, distinct ids: in lanes
// where a lane code holds them, else as Elias-Fano; ok is false if
// neither does (the ids need an overflow record).
func PackInline(ord, state uint32, ids []uint32) (Entry, bool) {
	if lo, hi, code, ok := PackLanes(ids); ok {
		return Entry{MakeMeta(ord, state, len(ids)) | uint64(code)<<CodeShift, lo, hi}, true
	}
	if lo, hi, l, ok := packEF(ids); ok {
		return Entry{MakeMeta(ord, state, int(l)) | CodeEF<<CodeShift, lo, hi}, true
	}
	return Entry{}, false
}

// InlineIDs appends an inline entry's ids to dst.
func InlineIDs(dst []uint32, en Entry) []uint32 {
	c := en.Code()
	if c == CodeEF {
		var buf [efMaxIDs]uint32
		n := EFDecode(buf[:], en.Lo, en.Hi, en.EFLow())
		return append(dst, buf[:n]...)
	}
	for k := range en.Count() {
		dst = append(dst, LaneID(en.Lo, en.Hi, c, k))
	}
	return dst
}
