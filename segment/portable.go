package segment

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"

	"github.com/RoaringBitmap/roaring/v2"
)

// The portable Roaring format, which the Java and C implementations read and
// write too: https://github.com/RoaringBitmap/RoaringFormatSpec.
const (
	cookieNoRuns      = 12346 // uint32 cookie, then uint32 container count
	cookieRuns        = 12347 // low 16 bits; high 16 bits are count-1
	noOffsetThreshold = 4     // run-cookie bitmaps with fewer containers omit offsets
	maxContainers     = 1 << 16
	maxArrayCard      = 4096
	bitmapBytes       = 8192
	maxRuns           = 1 << 15 // runs never touch, so a container holds at most 32768

	// maxPortableSize bounds the encoding of any bitmap: the largest header
	// plus 65536 containers of the largest kind.
	maxPortableSize = 4 + 4 + bitmapBytes + 8*maxContainers + maxContainers*(2+4*maxRuns)
)

// WriteTo writes s in the portable Roaring format: exactly
// SerializedSize bytes, byte for byte what roaring's (*Bitmap).WriteTo
// writes, readable by CRoaring and Java RoaringBitmap. It implements
// io.WriterTo. Writes are buffered unless w is a *bufio.Writer or
// *bytes.Buffer.
func (s *Set) WriteTo(w io.Writer) (int64, error) {
	bm := s.bitmap()
	switch w.(type) {
	case *bufio.Writer, *bytes.Buffer:
		return bm.WriteTo(w)
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	n, err := bm.WriteTo(bw)
	if err == nil {
		err = bw.Flush()
		n -= int64(bw.Buffered())
	}
	return n, err
}

// MarshalBinary returns s in the portable Roaring format (see WriteTo). It
// implements encoding.BinaryMarshaler.
func (s *Set) MarshalBinary() ([]byte, error) {
	buf := bytes.NewBuffer(make([]byte, 0, s.SerializedSize()))
	if _, err := s.bitmap().WriteTo(buf); err != nil {
		return nil, fmt.Errorf("segment: encoding set: %w", err)
	}
	return buf.Bytes(), nil
}

// UnmarshalBinary replaces the members of s with those encoded in data, which
// must hold exactly one bitmap in the portable Roaring format. It implements
// encoding.BinaryUnmarshaler. Invalid data, including trailing bytes, yields
// an error wrapping ErrCorrupt and leaves s unchanged; it never panics, and
// memory use is bounded by a small multiple of len(data).
func (s *Set) UnmarshalBinary(data []byte) error {
	bm, err := decodePortable(data)
	if err != nil {
		return err
	}
	s.bm = *bm
	return nil
}

// ReadFrom replaces the members of s with one bitmap in the portable Roaring
// format read from r. It reads exactly the bitmap's bytes and no more, so
// other data may follow in r. It implements io.ReaderFrom. Invalid data
// yields an error wrapping ErrCorrupt (and io.ErrUnexpectedEOF when r ends
// early) and leaves s unchanged. Memory grows only as bytes arrive, so a short
// input claiming a huge bitmap fails fast.
func (s *Set) ReadFrom(r io.Reader) (int64, error) {
	src := &streamSource{r: r}
	n, err := scanPortable(src)
	if err != nil {
		return int64(len(src.buf)), err
	}
	bm, err := decodeScanned(src.buf[:n])
	if err != nil {
		return int64(n), err
	}
	s.bm = *bm
	return int64(n), nil
}

// decodePortable decodes data, which must be exactly one valid bitmap.
func decodePortable(data []byte) (*roaring.Bitmap, error) {
	n, err := scanPortable(sliceSource(data))
	if err != nil {
		return nil, err
	}
	if n != len(data) {
		return nil, corruptSet("%d bytes after the bitmap", len(data)-n)
	}
	return decodeScanned(data)
}

// decodeScanned decodes data that scanPortable accepted. roaring copies
// every container out of data, so the bitmap never aliases it and never needs
// copy-on-write. The recover is defence in depth: scanPortable already
// rejects everything the decoder could trip on.
func decodeScanned(data []byte) (bm *roaring.Bitmap, err error) {
	defer func() {
		if r := recover(); r != nil {
			bm, err = nil, corruptSet("decoder panic: %v", r)
		}
	}()
	bm = roaring.New()
	if _, err := bm.ReadFrom(bytes.NewReader(data)); err != nil {
		return nil, corruptSet("%v", err)
	}
	return bm, nil
}

func corruptSet(format string, args ...any) error {
	return &dataError{kind: ErrCorrupt, where: "set encoding", detail: fmt.Sprintf(format, args...)}
}

// A source yields the encoded bytes scanPortable walks over. Returned slices
// stay valid: sources only ever append.
type source interface {
	bytes(off, n int) ([]byte, error)
}

// sliceSource is an encoding already in memory.
type sliceSource []byte

func (b sliceSource) bytes(off, n int) ([]byte, error) {
	if n > len(b)-off {
		return nil, io.ErrUnexpectedEOF
	}
	return b[off : off+n], nil
}

// streamSource reads the encoding from r as scanPortable asks for it,
// exactly up to the bitmap's end. Its buffer grows at most by its own size
// (or 4 KiB) per read, so what it allocates stays within twice what arrived.
type streamSource struct {
	r   io.Reader
	buf []byte
}

func (s *streamSource) bytes(off, n int) ([]byte, error) {
	end := off + n
	for len(s.buf) < end {
		old := len(s.buf)
		grow := min(end-old, max(old, 4<<10))
		s.buf = slices.Grow(s.buf, grow)[:old+grow]
		m, err := io.ReadFull(s.r, s.buf[old:])
		s.buf = s.buf[:old+m]
		if err != nil {
			return nil, err
		}
	}
	return s.buf[off:end], nil
}

// scanPortable checks that src starts with a valid bitmap in the portable
// format and returns its length. It applies the checks of roaring's
// Validate (sorted keys; sorted arrays; exact bitmap cardinalities; sorted,
// non-empty, non-touching runs) in linear time, where Validate is quadratic in
// the runs of a container, and it reads every length before trusting it.
func scanPortable(src source) (int, error) {
	off := 0
	next := func(n int) ([]byte, error) {
		b, err := src.bytes(off, n)
		if err != nil {
			return nil, shortSet(err)
		}
		off += n
		return b, nil
	}
	b, err := next(4)
	if err != nil {
		return 0, err
	}
	var size int
	var runFlags []byte
	switch cookie := binary.LittleEndian.Uint32(b); {
	case cookie&0xffff == cookieRuns:
		size = int(cookie>>16) + 1
		if runFlags, err = next((size + 7) / 8); err != nil {
			return 0, err
		}
	case cookie == cookieNoRuns:
		if b, err = next(4); err != nil {
			return 0, err
		}
		n := binary.LittleEndian.Uint32(b)
		if n > maxContainers {
			return 0, corruptSet("%d containers, over the maximum %d", n, maxContainers)
		}
		size = int(n)
	default:
		return 0, corruptSet("unknown cookie: not a portable Roaring bitmap")
	}
	header, err := next(4 * size)
	if err != nil {
		return 0, err
	}
	if runFlags == nil || size >= noOffsetThreshold {
		if _, err := next(4 * size); err != nil { // offsets: not needed to decode
			return 0, err
		}
	}
	prevKey := -1
	for i := range size {
		key := int(binary.LittleEndian.Uint16(header[4*i:]))
		card := int(binary.LittleEndian.Uint16(header[4*i+2:])) + 1
		if key <= prevKey {
			return 0, corruptSet("container %d: key %d not above the previous key %d", i, key, prevKey)
		}
		prevKey = key
		var problem string
		switch {
		case runFlags != nil && runFlags[i/8]&(1<<(i%8)) != 0:
			if b, err = next(2); err != nil {
				return 0, err
			}
			n := int(binary.LittleEndian.Uint16(b))
			if b, err = next(4 * n); err != nil {
				return 0, err
			}
			problem = checkRuns(b)
		case card > maxArrayCard:
			if b, err = next(bitmapBytes); err != nil {
				return 0, err
			}
			if n := popcount(b); n != card {
				problem = fmt.Sprintf("bitmap holds %d values, header says %d", n, card)
			}
		default:
			if b, err = next(2 * card); err != nil {
				return 0, err
			}
			problem = checkArray(b)
		}
		if problem != "" {
			return 0, corruptSet("container %d (key %d): %s", i, key, problem)
		}
	}
	return off, nil
}

// shortSet turns a source error into the error scanPortable returns.
func shortSet(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &dataError{kind: ErrCorrupt, where: "set encoding", detail: "unexpected end of data", cause: io.ErrUnexpectedEOF}
	}
	return fmt.Errorf("segment: reading set: %w", err)
}

// checkRuns checks a run container's (start, length-1) pairs.
func checkRuns(b []byte) string {
	if len(b) == 0 {
		return "run container without runs"
	}
	prevLast := -2
	for i := 0; i < len(b); i += 4 {
		start := int(binary.LittleEndian.Uint16(b[i:]))
		last := start + int(binary.LittleEndian.Uint16(b[i+2:]))
		switch {
		case last > 0xffff:
			return fmt.Sprintf("run %d passes the container end", i/4)
		case start <= prevLast+1:
			return fmt.Sprintf("run %d overlaps or touches the previous run", i/4)
		}
		prevLast = last
	}
	return ""
}

// checkArray checks that an array container's values strictly increase.
// It runs over every value of every array container a snapshot holds, so it
// is branch-free (a value not above its predecessor makes v-prev-1
// negative) and reads four values per load.
func checkArray(b []byte) string {
	var bad int64
	prev := int64(-1)
	for len(b) >= 8 {
		w := binary.LittleEndian.Uint64(b)
		v0, v1, v2, v3 := int64(w&0xffff), int64(w>>16&0xffff), int64(w>>32&0xffff), int64(w>>48)
		bad |= (v0 - prev - 1) | (v1 - v0 - 1) | (v2 - v1 - 1) | (v3 - v2 - 1)
		prev = v3
		b = b[8:]
	}
	for len(b) >= 2 {
		v := int64(binary.LittleEndian.Uint16(b))
		bad |= v - prev - 1
		prev = v
		b = b[2:]
	}
	if bad < 0 {
		return "array values not strictly increasing"
	}
	return ""
}

func popcount(b []byte) int {
	n := 0
	for i := 0; i+8 <= len(b); i += 8 {
		n += bits.OnesCount64(binary.LittleEndian.Uint64(b[i:]))
	}
	return n
}
