package segment

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/cespare/xxhash/v2"
)

// A Section is one section of a snapshot, as Reader.Next returns it. The
// Reader keeps no reference to it; what its accessors return belongs to
// the caller.
//
// The zero Section holds nothing (its accessors return nil). A Section is not
// changed once returned and may be read from any goroutine.
type Section struct {
	Kind Kind   `json:"kind"`
	Name string `json:"name"`
	// Aux is the attribute written with a blob; for a KindTimed section, the
	// epoch in nanoseconds; 0 for a set.
	Aux int64 `json:"aux"`
	// Offset is where the section starts in the snapshot, in bytes.
	Offset int64 `json:"offset"`

	set   *Set
	timed *Timed
	blob  []byte
}

// Set returns the set of a KindSet section, nil for other kinds. The
// caller owns it.
func (s *Section) Set() *Set { return s.set }

// Timed returns the Timed of a KindTimed section, nil for other kinds. The
// caller owns it.
func (s *Section) Timed() *Timed { return s.timed }

// Blob returns the payload of a KindBlob section, nil for other kinds. The
// caller owns it.
func (s *Section) Blob() []byte { return s.blob }

// A Reader reads a snapshot written by a Writer, verifying every checksum
// and length as it goes. It never panics on bad input and allocates only as
// input actually arrives: when the input's size is unknown, a payload is
// read in growing chunks, so a short input that claims a huge payload fails
// with ErrTruncated after allocating about as much as it held.
//
// If r has a Len() int method (*bytes.Reader, *bytes.Buffer,
// *strings.Reader), its result is taken as the bytes left in the snapshot;
// otherwise, if r has a Size() int64 method (*io.SectionReader), its result
// is taken as the snapshot's size, r being at its start. Either way lengths
// past the end fail with ErrLength before anything is allocated for them.
// For a file, pass io.NewSectionReader(f, 0, size). Other readers are
// buffered, and may be read past the trailer.
//
// The zero Reader is not usable: use NewReader. A Reader is not safe for
// concurrent use.
type Reader struct {
	r      io.Reader
	off    int64 // bytes consumed
	remain int64 // bytes left in the input, -1 when unknown
	index  int64 // sections read so far
	chain  *xxhash.Digest
	digest *xxhash.Digest // payloads, reused
	buf    []byte         // set payloads, reused
	hdr    [19 + MaxNameLen + 8]byte
	err    error // sticky; io.EOF after the trailer
}

// sectionHeader is a decoded section header.
type sectionHeader struct {
	kind  Kind
	name  string
	aux   int64
	size  uint64
	off   int64 // where the section starts
	index int64
	sum   uint64 // the header's checksum
}

// NewReader reads and verifies a snapshot header from r.
func NewReader(r io.Reader) (*Reader, error) {
	sr := &Reader{r: r, remain: -1, chain: xxhash.New(), digest: xxhash.New()}
	switch v := r.(type) {
	case interface{ Len() int }:
		sr.remain = int64(v.Len())
	case interface{ Size() int64 }:
		sr.remain = v.Size()
		sr.r = bufio.NewReaderSize(r, 64<<10)
	default:
		sr.r = bufio.NewReaderSize(r, 64<<10)
	}
	var h [headerLen]byte
	n, err := sr.readFull(h[:])
	if string(h[:min(n, len(magic))]) != magic[:min(n, len(magic))] {
		// The bytes found are not quoted: pointed at the wrong file, they
		// could be anyone's data.
		return nil, headerError(ErrBadMagic, "the input does not start with %q", magic)
	}
	if err != nil {
		return nil, sr.readError(err, "snapshot: header")
	}
	switch version := binary.LittleEndian.Uint16(h[8:]); {
	case version != formatVersion:
		return nil, headerError(ErrVersion, "version %d, want %d", version, formatVersion)
	case xxhash.Sum64(h[:16]) != binary.LittleEndian.Uint64(h[16:]):
		return nil, headerError(ErrChecksum, "header checksum mismatch")
	case binary.LittleEndian.Uint16(h[10:]) != 0 || binary.LittleEndian.Uint32(h[12:]) != 0:
		return nil, headerError(ErrVersion, "unknown flags %#x or reserved bits %#x",
			binary.LittleEndian.Uint16(h[10:]), binary.LittleEndian.Uint32(h[12:]))
	}
	return sr, nil
}

func headerError(kind error, format string, args ...any) error {
	return &dataError{kind: kind, where: "snapshot: header", detail: fmt.Sprintf(format, args...)}
}

// Next returns the next section. After the trailer it returns io.EOF; a
// snapshot that ends without one fails with ErrTruncated. Errors are sticky.
func (r *Reader) Next() (*Section, error) {
	if r.err != nil {
		return nil, r.err
	}
	sec, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	return sec, nil
}

func (r *Reader) next() (*Section, error) {
	h, err := r.readSectionHeader()
	if err != nil {
		return nil, err
	}
	sec := &Section{Kind: h.kind, Name: h.name, Aux: h.aux, Offset: h.off}
	switch h.kind {
	case KindSet:
		if h.aux != 0 {
			return nil, r.errorf(ErrCorrupt, h, "set section with aux %d, want 0", h.aux)
		}
		sec.set, err = r.readBitmap(h)
	case KindBlob:
		sec.blob, err = r.readPayload(h, MaxBlobLen, nil)
		sec.blob = slices.Clip(sec.blob)
	case KindTimed:
		sec.timed, err = r.readTimed(h)
	case kindEnd:
		err = r.readTrailer(h)
	default:
		err = r.errorf(ErrCorrupt, h, "unexpected %s section", h.kind)
	}
	if err != nil {
		return nil, err
	}
	return sec, nil
}

// readSectionHeader reads and verifies a section header.
func (r *Reader) readSectionHeader() (*sectionHeader, error) {
	h := &sectionHeader{off: r.off, index: r.index}
	b := r.hdr[:3]
	if n, err := r.readFull(b); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, r.errorf(ErrTruncated, h, "snapshot ends before its trailer")
		}
		return nil, r.readError(err, r.where(h))
	}
	h.kind = Kind(b[0])
	n := int(binary.LittleEndian.Uint16(b[1:]))
	if n > MaxNameLen {
		return nil, r.errorf(ErrLength, h, "name of %d bytes, over MaxNameLen %d", n, MaxNameLen)
	}
	b = r.hdr[:3+n+24]
	if _, err := r.readFull(b[3:]); err != nil {
		return nil, r.readError(err, r.where(h))
	}
	h.name = string(b[3 : 3+n])
	h.aux = int64(binary.LittleEndian.Uint64(b[3+n:]))
	h.size = binary.LittleEndian.Uint64(b[11+n:])
	h.sum = xxhash.Sum64(b[:19+n])
	if h.sum != binary.LittleEndian.Uint64(b[19+n:]) {
		return nil, r.errorf(ErrChecksum, h, "section header checksum mismatch")
	}
	return h, nil
}

// checkLen rejects a payload length over limit or past the end of the
// input, before anything is allocated for it.
func (r *Reader) checkLen(h *sectionHeader, limit uint64) error {
	switch {
	case h.size > limit || h.size > math.MaxInt-8:
		return r.errorf(ErrLength, h, "payload of %d bytes, over the maximum %d for a %s section", h.size, limit, h.kind)
	case r.remain >= 0 && h.size+8 > uint64(r.remain):
		return r.errorf(ErrLength, h, "payload of %d bytes, but only %d bytes left", h.size, r.remain)
	}
	return nil
}

// readPayload reads the payload of h, at most limit bytes, into dst's
// memory, and verifies its checksum.
func (r *Reader) readPayload(h *sectionHeader, limit uint64, dst []byte) ([]byte, error) {
	if err := r.checkLen(h, limit); err != nil {
		return nil, err
	}
	p := r.newPayload(h, dst)
	if err := p.fill(int(h.size)); err != nil {
		return nil, err
	}
	return p.buf, r.endPayload(h, p.d.Sum64())
}

// endPayload reads and verifies the payload checksum, whose computed value
// is got, and adds the section to the trailer's chain.
func (r *Reader) endPayload(h *sectionHeader, got uint64) error {
	var sums [16]byte
	if _, err := r.readFull(sums[8:]); err != nil {
		return r.readError(err, r.where(h))
	}
	if got != binary.LittleEndian.Uint64(sums[8:]) {
		return r.errorf(ErrChecksum, h, "payload checksum mismatch")
	}
	binary.LittleEndian.PutUint64(sums[:], h.sum)
	_, _ = r.chain.Write(sums[:])
	r.index++
	return nil
}

// readBitmap reads a payload in the portable Roaring format. The payload is
// read piece by piece as scanPortable asks for it, and each piece is hashed
// and checked as it arrives, while it is in cache; roaring then decodes the
// checked bytes, copying them into its containers.
func (r *Reader) readBitmap(h *sectionHeader) (*Set, error) {
	if err := r.checkLen(h, maxPortableSize); err != nil {
		return nil, err
	}
	p := r.newPayload(h, r.buf)
	n, scanErr := scanPortable(p)
	if p.err != nil {
		return nil, p.err // the input ended or failed: not the bitmap's fault
	}
	if scanErr == nil && n < int(h.size) {
		scanErr = corruptSet("%d bytes after the bitmap", int(h.size)-n)
	}
	// Read what the scan did not need too, so that damage shows as a
	// checksum mismatch before it shows as a corrupt bitmap.
	if err := p.fill(int(h.size)); err != nil {
		return nil, err
	}
	r.buf = p.buf
	if err := r.endPayload(h, p.d.Sum64()); err != nil {
		return nil, err
	}
	var bm *roaring.Bitmap
	if scanErr == nil {
		bm, scanErr = decodeScanned(p.buf[:n])
	}
	if scanErr != nil {
		var de *dataError
		if errors.As(scanErr, &de) {
			return nil, r.errorf(ErrCorrupt, h, "payload: %s", de.detail)
		}
		return nil, scanErr
	}
	return fromBitmap(bm), nil
}

// payload reads a section payload from the snapshot as its consumer asks,
// hashing each piece as it arrives.
type payload struct {
	r   *Reader
	h   *sectionHeader
	buf []byte
	d   *xxhash.Digest
	err error // why reading stopped: truncation or an I/O error
}

func (r *Reader) newPayload(h *sectionHeader, dst []byte) *payload {
	r.digest.Reset()
	p := &payload{r: r, h: h, buf: dst[:0], d: r.digest}
	if r.remain >= 0 {
		p.buf = slices.Grow(p.buf, int(h.size)) // checkLen saw the bytes are there
	}
	return p
}

// bytes implements source for scanPortable.
func (p *payload) bytes(off, n int) ([]byte, error) {
	end := off + n
	if end > int(p.h.size) {
		return nil, io.ErrUnexpectedEOF // the bitmap claims more than the payload holds
	}
	if err := p.fill(end); err != nil {
		return nil, err
	}
	return p.buf[off:end], nil
}

// fill reads the payload up to byte end. When the input's size is unknown
// the buffer grows at most by its own size (or 64 KiB) per read, so memory
// follows the bytes that actually arrive.
func (p *payload) fill(end int) error {
	for len(p.buf) < end {
		old := len(p.buf)
		grow := end - old
		if p.r.remain < 0 {
			grow = min(grow, max(old, 64<<10))
		}
		p.buf = slices.Grow(p.buf, grow)[:old+grow]
		n, err := p.r.readFull(p.buf[old:])
		p.buf = p.buf[:old+n]
		if err != nil {
			p.err = p.r.readError(err, p.r.where(p.h))
			return p.err
		}
		_, _ = p.d.Write(p.buf[old:])
	}
	return nil
}

// readTimed reads a timed section and its buckets.
func (r *Reader) readTimed(h *sectionHeader) (*Timed, error) {
	if h.size != 8 {
		return nil, r.errorf(ErrLength, h, "payload of %d bytes, want 8", h.size)
	}
	payload, err := r.readPayload(h, 8, nil)
	if err != nil {
		return nil, err
	}
	if h.aux <= 0 || h.aux > int64(maxEpoch) {
		return nil, r.errorf(ErrCorrupt, h, "epoch %d out of range", h.aux)
	}
	t := NewTimed(time.Duration(h.aux))
	for i, k := uint64(0), binary.LittleEndian.Uint64(payload); i < k; i++ {
		bh, err := r.readSectionHeader()
		if err != nil {
			return nil, err
		}
		if bh.kind != kindTimedBucket || bh.name != "" {
			return nil, r.errorf(ErrCorrupt, bh, "%s section %q where bucket %d of %d of timed %q belongs", bh.kind, bh.name, i, k, h.name)
		}
		s, err := r.readBitmap(bh)
		if err != nil {
			return nil, err
		}
		if problem := t.appendBucket(bh.aux, s); problem != "" {
			return nil, r.errorf(ErrCorrupt, bh, "%s", problem)
		}
	}
	return t, nil
}

// readTrailer verifies the trailer and returns io.EOF.
func (r *Reader) readTrailer(h *sectionHeader) error {
	switch {
	case h.size != 8:
		return r.errorf(ErrLength, h, "payload of %d bytes, want 8", h.size)
	case h.name != "":
		return r.errorf(ErrCorrupt, h, "trailer with a name")
	}
	want, count := r.chain.Sum64(), r.index
	payload, err := r.readPayload(h, 8, nil)
	switch {
	case err != nil:
		return err
	case binary.LittleEndian.Uint64(payload) != want:
		return r.errorf(ErrChecksum, h, "sections do not match the trailer's checksum")
	case h.aux != count:
		return r.errorf(ErrCorrupt, h, "trailer counts %d sections, read %d", h.aux, count)
	}
	return io.EOF
}

func (r *Reader) readFull(b []byte) (int, error) {
	n, err := io.ReadFull(r.r, b)
	r.off += int64(n)
	if r.remain >= 0 {
		r.remain = max(r.remain-int64(n), 0)
	}
	return n, err
}

// readError turns a read error into ErrTruncated, or wraps an I/O error.
func (r *Reader) readError(err error, where string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &dataError{kind: ErrTruncated, where: where, detail: fmt.Sprintf("input ends at byte %d", r.off)}
	}
	return fmt.Errorf("segment: %s: %w", where, err)
}

func (r *Reader) where(h *sectionHeader) string {
	return fmt.Sprintf("snapshot: section %d %q at byte %d", h.index, h.name, h.off)
}

func (r *Reader) errorf(kind error, h *sectionHeader, format string, args ...any) error {
	return &dataError{kind: kind, where: r.where(h), detail: fmt.Sprintf(format, args...)}
}

// ReadSets reads a snapshot of set sections, as WriteSets writes, into a
// map by name. Other section kinds and duplicate names are errors.
func ReadSets(r io.Reader) (map[string]*Set, error) {
	sr, err := NewReader(r)
	if err != nil {
		return nil, err
	}
	sets := make(map[string]*Set)
	for {
		index := sr.index
		sec, err := sr.Next()
		if err == io.EOF {
			return sets, nil
		}
		if err != nil {
			return nil, err
		}
		h := &sectionHeader{name: sec.Name, off: sec.Offset, index: index}
		if sec.Kind != KindSet {
			return nil, sr.errorf(ErrCorrupt, h, "a %s section; ReadSets reads only sets", sec.Kind)
		}
		if _, dup := sets[sec.Name]; dup {
			return nil, sr.errorf(ErrCorrupt, h, "duplicate name")
		}
		sets[sec.Name] = sec.Set()
	}
}
