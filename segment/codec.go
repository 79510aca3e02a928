package segment

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Limits of the snapshot format (see Writer).
const (
	// MaxNameLen is the longest section name, in bytes.
	MaxNameLen = 1024
	// MaxBlobLen is the largest blob payload, in bytes.
	MaxBlobLen = 1 << 40
)

const (
	magic         = "\x89SEG\r\n\x1a\n"
	formatVersion = 1
	headerLen     = 24
)

// Kind is the kind of a snapshot section.
//
// Its zero value is no kind; a Reader never returns it. A Kind is a plain
// value, safe to share between goroutines.
type Kind uint8

// Section kinds a Reader returns.
const (
	KindSet   Kind = 1 // a *Set
	KindBlob  Kind = 2 // opaque bytes
	KindTimed Kind = 3 // a *Timed
)

// Section kinds used only inside the format.
const (
	kindTimedBucket Kind = 4
	kindEnd         Kind = 255
)

func (k Kind) String() string {
	switch k {
	case KindSet:
		return "set"
	case KindBlob:
		return "blob"
	case KindTimed:
		return "timed"
	case kindTimedBucket:
		return "timed bucket"
	case kindEnd:
		return "trailer"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// A Writer writes a snapshot: NewWriter writes the header, each of Set,
// Timed and Blob one named section, and Close the trailer. Section names
// need not be unique for the Writer (ReadSets requires them to be).
//
// A Writer buffers its output; nothing is complete until Close returns nil.
// After an error every later call returns it. The zero Writer is not usable:
// use NewWriter. A Writer is not safe for concurrent use.
//
// The format, version 1: a snapshot is a header, any number of named
// sections, and a trailer. All integers are little-endian; every checksum
// is xxhash64 (seed 0).
//
// Header, 24 bytes:
//
//	offset  size  field
//	0       8     magic "\x89SEG\r\n\x1a\n" (the high byte and line endings
//	              catch 7-bit and text-mode transfers)
//	8       2     version, 1
//	10      2     flags, 0 (a reader rejects bits it does not know)
//	12      4     reserved, 0
//	16      8     checksum of bytes 0-15
//
// Section, n = name length, m = payload length:
//
//	0       1     kind
//	1       2     n, at most MaxNameLen
//	3       n     name
//	3+n     8     aux, a signed 64-bit attribute whose meaning depends on kind
//	11+n    8     m
//	19+n    8     checksum of bytes 0 to 18+n
//	27+n    m     payload
//	27+n+m  8     checksum of the payload
//
// Kinds:
//
//	1 set          payload: one bitmap in the portable Roaring format, exactly
//	               as roaring's (*Bitmap).WriteTo writes it (CRoaring and Java
//	               RoaringBitmap read it); aux 0.
//	2 blob         payload: opaque bytes, at most MaxBlobLen; aux: the writer's.
//	3 timed        a Timed: aux is the epoch in nanoseconds; the payload is a
//	               uint64 count k of buckets, and k sections of kind 4 follow.
//	4 timed bucket one epoch of the preceding timed section: empty name; aux
//	               is the epoch start in Unix nanoseconds; payload as kind 1.
//	               Buckets are non-empty, disjoint, and in increasing order.
//	255 trailer    empty name; aux is the number of sections before it; the
//	               payload is a uint64: the checksum of the concatenated
//	               header checksum and payload checksum (16 bytes) of every
//	               section before it, in order.
//
// The trailer makes a snapshot cut at a section boundary, or missing or
// reordered sections, detectable. A Reader stops at the trailer and ignores
// whatever follows it.
type Writer struct {
	bw        *bufio.Writer
	n         int64          // bytes written, header included
	payload   *xxhash.Digest // reused for each payload
	chain     *xxhash.Digest // over each section's two checksums
	count     int64          // sections written
	headerSum uint64         // checksum of the current section's header
	scratch   [19 + MaxNameLen + 8]byte
	err       error
}

var errWriterClosed = errors.New("segment: snapshot writer is closed")

// NewWriter writes a snapshot header to w and returns a Writer for the
// sections. It never closes w.
func NewWriter(w io.Writer) (*Writer, error) {
	sw := &Writer{bw: bufio.NewWriterSize(w, 256<<10), payload: xxhash.New(), chain: xxhash.New()}
	var h [headerLen]byte
	copy(h[:], magic)
	binary.LittleEndian.PutUint16(h[8:], formatVersion)
	binary.LittleEndian.PutUint64(h[16:], xxhash.Sum64(h[:16]))
	if err := sw.write(h[:]); err != nil {
		return nil, err
	}
	return sw, nil
}

// Set writes s (nil is the empty set) as a set section.
func (w *Writer) Set(name string, s *Set) error {
	return w.bitmapSection(KindSet, name, 0, s)
}

// Timed writes t as a timed section followed by one section per epoch.
func (w *Writer) Timed(name string, t *Timed) error {
	if t == nil || t.epoch == 0 {
		return w.fail(fmt.Errorf("segment: snapshot: timed %q: nil or zero Timed", name))
	}
	var k [8]byte
	binary.LittleEndian.PutUint64(k[:], uint64(len(t.buckets)))
	if err := w.bytesSection(KindTimed, name, t.epoch, k[:]); err != nil {
		return err
	}
	for _, b := range t.buckets {
		if err := w.bitmapSection(kindTimedBucket, "", b.start, b.set); err != nil {
			return err
		}
	}
	return nil
}

// Blob writes b as a blob section with the attribute aux.
func (w *Writer) Blob(name string, aux int64, b []byte) error {
	if len(b) > MaxBlobLen {
		return w.fail(fmt.Errorf("segment: snapshot: blob %q: %d bytes, over MaxBlobLen", name, len(b)))
	}
	return w.bytesSection(KindBlob, name, aux, b)
}

// Close writes the trailer and flushes. It does not close the underlying
// io.Writer. Calling Close again returns an error.
func (w *Writer) Close() error {
	var sum [8]byte
	binary.LittleEndian.PutUint64(sum[:], w.chain.Sum64())
	if err := w.bytesSection(kindEnd, "", w.count, sum[:]); err != nil {
		return err
	}
	if err := w.bw.Flush(); err != nil {
		return w.fail(fmt.Errorf("segment: snapshot: %w", err))
	}
	w.err = errWriterClosed
	return nil
}

// bytesSection writes a section with payload b.
func (w *Writer) bytesSection(kind Kind, name string, aux int64, b []byte) error {
	if err := w.sectionHeader(kind, name, aux, uint64(len(b))); err != nil {
		return err
	}
	w.payload.Reset()
	_, _ = w.payload.Write(b)
	if err := w.write(b); err != nil {
		return err
	}
	return w.endSection()
}

// bitmapSection writes a section whose payload is s's portable encoding,
// hashing it on its way to the buffer.
func (w *Writer) bitmapSection(kind Kind, name string, aux int64, s *Set) error {
	size := s.SerializedSize()
	if err := w.sectionHeader(kind, name, aux, size); err != nil {
		return err
	}
	w.payload.Reset()
	n, err := s.bitmap().WriteTo(&hashWriter{w: w.bw, d: w.payload})
	w.n += n
	switch {
	case err != nil:
		return w.fail(fmt.Errorf("segment: snapshot: %s %q: %w", kind, name, err))
	case uint64(n) != size:
		return w.fail(fmt.Errorf("segment: snapshot: %s %q: wrote %d bytes, expected %d", kind, name, n, size))
	}
	return w.endSection()
}

// sectionHeader writes a section header and its checksum.
func (w *Writer) sectionHeader(kind Kind, name string, aux int64, size uint64) error {
	if w.err != nil {
		return w.err
	}
	if len(name) > MaxNameLen {
		return w.fail(fmt.Errorf("segment: snapshot: section name of %d bytes, over MaxNameLen", len(name)))
	}
	h := w.scratch[:0]
	h = append(h, byte(kind))
	h = binary.LittleEndian.AppendUint16(h, uint16(len(name)))
	h = append(h, name...)
	h = binary.LittleEndian.AppendUint64(h, uint64(aux))
	h = binary.LittleEndian.AppendUint64(h, size)
	w.headerSum = xxhash.Sum64(h)
	h = binary.LittleEndian.AppendUint64(h, w.headerSum)
	return w.write(h)
}

// endSection writes the payload checksum and adds the section to the chain.
func (w *Writer) endSection() error {
	var sums [16]byte
	binary.LittleEndian.PutUint64(sums[:], w.headerSum)
	binary.LittleEndian.PutUint64(sums[8:], w.payload.Sum64())
	if err := w.write(sums[8:]); err != nil {
		return err
	}
	_, _ = w.chain.Write(sums[:])
	w.count++
	return nil
}

func (w *Writer) write(b []byte) error {
	n, err := w.bw.Write(b)
	w.n += int64(n)
	if err != nil {
		return w.fail(fmt.Errorf("segment: snapshot: %w", err))
	}
	return nil
}

// fail makes err sticky.
func (w *Writer) fail(err error) error {
	w.err = err
	return err
}

// hashWriter hashes what it passes on.
type hashWriter struct {
	w io.Writer
	d *xxhash.Digest
}

func (h *hashWriter) Write(p []byte) (int, error) {
	_, _ = h.d.Write(p)
	return h.w.Write(p)
}

// WriteSets writes sets as a snapshot of set sections in name order, so
// equal maps give identical bytes, and returns the number of bytes written.
// A nil set is written as empty.
func WriteSets(w io.Writer, sets map[string]*Set) (int64, error) {
	sw, err := NewWriter(w)
	if err != nil {
		return 0, err
	}
	for _, name := range slices.Sorted(maps.Keys(sets)) {
		if err := sw.Set(name, sets[name]); err != nil {
			return sw.n - int64(sw.bw.Buffered()), err
		}
	}
	err = sw.Close()
	return sw.n - int64(sw.bw.Buffered()), err
}
