package personify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
	"time"

	"github.com/personify-go/personify/anonymize"
)

// Every change to an engine is an op: a value that holds pseudonyms, names
// and times, never an identifier or a key. The public methods validate
// their arguments, pseudonymize, build an op and commit it; committing
// applies it (in memory) or logs it durably and then applies it (Open).
// Replaying the log after a restart applies the same ops through the same
// code, so a live write and its replay cannot disagree: apply reads the
// time from the op, never from the clock.
type opKind uint8

const (
	opDefinePurpose opKind = iota + 1
	opDefine
	opDrop
	opAdd            // by identifier: every keyed pseudonym of each person
	opAddPseudonyms  // bulk, under the current key (or an alias)
	opRemove         // keyed pseudonyms, one per key, any person
	opConsent        // one person
	opSuppress       // one person; flag: on or off
	opForget         // one person; flag: do not re-add
	opExpire         // at: the time retention is applied at
	opRotateKey      // key: the new key's fingerprint; grace
	opKindEnd        // one past the last kind
	maxOpPurposeList = MaxPurposes
	maxOpString      = 1 << 20
)

func (k opKind) String() string {
	names := [...]string{"", "define-purpose", "define", "drop", "add", "add-pseudonyms", "remove",
		"consent", "suppress", "forget", "expire", "rotate-key"}
	if k == 0 || k >= opKindEnd {
		return fmt.Sprintf("op(%d)", uint8(k))
	}
	return names[k]
}

type op struct {
	kind    opKind
	at      time.Time // when the change was asked for; apply uses it as "now"
	name    string    // segment (define, drop, add, remove) or purpose (consent)
	purpose Purpose   // define-purpose
	seg     Segment   // define
	people  [][]anonymize.KeyedPseudonym
	ps      []anonymize.Pseudonym      // add-pseudonyms
	names   []string                   // suppress: purposes (none: every purpose)
	flag    bool                       // consent: granted; suppress: on; forget: do not re-add
	key     anonymize.Fingerprint      // rotate-key
	grace   time.Duration              // rotate-key
	purgeBy time.Time                  // forget: the deadline its receipt promises for physical erasure (zero in memory)
	also    []anonymize.KeyedPseudonym // forget with do-not-re-add: the person's pseudonyms under keys not in use yet (UpcomingKeys)

	// Not logged.
	next    anonymize.Key // rotate-key: the key itself, from the caller or Options
	receipt string        // forget: the receipt's id, for the audit event
	seq     uint64        // the op's position in the log or journal, set before it is applied (zero in memory)
	version int           // the record format it was decoded from (recVersion for live changes)
}

// opResult is what applying an op reports back to its caller.
type opResult struct {
	n      int                   // add: added; expire: dropped
	erased erased                // forget
	key    anonymize.Fingerprint // forget: the current key when it was applied
	seq    uint64                // the op's log sequence number (durable engines)
}

// A log record on disk:
//
//	magic   4 bytes "PFYR"
//	length  4 bytes, little endian: the body's length
//	crc     4 bytes, little endian: CRC-32C of length and body
//	body    seq (8 bytes LE), kind (1), at (8, Unix ns LE), then by kind:
//
//	define-purpose  str name, u8 model, str description
//	define          str name, str purpose, str description, i64 retention, uvarint min size, u8 sensitive
//	drop            str name
//	add             str segment, people
//	add-pseudonyms  str segment, uvarint n, n x u64
//	remove          str segment, keyed
//	consent         str purpose, u8 granted, keyed
//	suppress        u8 on, uvarint n, n x str purpose, keyed
//	forget          u8 do-not-re-add, keyed, then (version 2) i64 purge-by (Unix ns; 0: none), keyed also
//	expire          (nothing)
//	rotate-key      8-byte fingerprint, i64 grace
//
// where str is uvarint length and bytes, keyed is uvarint n and n x
// (u64 pseudonym, 8-byte key fingerprint), and people is uvarint n and n x
// keyed. A record is valid only if its CRC matches and its body decodes
// exactly, with nothing left over, and every varint in it is in its
// shortest form (so that one change has exactly one encoding).
//
// Version 1 records (logs written by earlier releases, "PFYLOG1") lack the
// forget record's purge-by; version 2 is what is written now.
const (
	recVersion   = 2
	recMagic     = "PFYR"
	recHeaderLen = 12
	// maxRecordLen bounds one record's body (a bulk load of about 130
	// million pseudonyms); a durable or replicated engine refuses larger
	// changes before logging them (op.checkSize).
	maxRecordLen = 1 << 30
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errRecord is wrapped by every record decoding error.
var errRecord = errors.New("malformed log record")

// appendRecord appends the record of o with sequence number seq to dst.
func appendRecord(dst []byte, seq uint64, o *op) []byte {
	start := len(dst)
	dst = append(dst, recMagic...)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0) // length and crc, below
	body := len(dst)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	dst = append(dst, byte(o.kind))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(o.at.UnixNano()))
	switch o.kind {
	case opDefinePurpose:
		dst = appendStr(dst, o.purpose.Name)
		dst = append(dst, byte(o.purpose.Model))
		dst = appendStr(dst, o.purpose.Description)
	case opDefine:
		dst = appendStr(dst, o.seg.Name)
		dst = appendStr(dst, o.seg.Purpose)
		dst = appendStr(dst, o.seg.Description)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(o.seg.Retention))
		dst = binary.AppendUvarint(dst, uint64(o.seg.MinSize))
		dst = appendBool(dst, o.seg.Sensitive)
	case opDrop:
		dst = appendStr(dst, o.name)
	case opAdd:
		dst = appendStr(dst, o.name)
		dst = binary.AppendUvarint(dst, uint64(len(o.people)))
		for _, kps := range o.people {
			dst = appendKeyed(dst, kps)
		}
	case opAddPseudonyms:
		dst = appendStr(dst, o.name)
		dst = binary.AppendUvarint(dst, uint64(len(o.ps)))
		for _, p := range o.ps {
			dst = binary.LittleEndian.AppendUint64(dst, uint64(p))
		}
	case opRemove:
		dst = appendStr(dst, o.name)
		dst = appendKeyed(dst, o.person())
	case opConsent:
		dst = appendStr(dst, o.name)
		dst = appendBool(dst, o.flag)
		dst = appendKeyed(dst, o.person())
	case opSuppress:
		dst = appendBool(dst, o.flag)
		dst = binary.AppendUvarint(dst, uint64(len(o.names)))
		for _, n := range o.names {
			dst = appendStr(dst, n)
		}
		dst = appendKeyed(dst, o.person())
	case opForget:
		dst = appendBool(dst, o.flag)
		dst = appendKeyed(dst, o.person())
		dst = binary.LittleEndian.AppendUint64(dst, uint64(unixNanoOrZero(o.purgeBy)))
		dst = appendKeyed(dst, o.also)
	case opExpire:
	case opRotateKey:
		dst = append(dst, o.key[:]...)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(o.grace))
	}
	n := len(dst) - body
	binary.LittleEndian.PutUint32(dst[start+4:], uint32(n))
	crc := crc32.Update(0, crcTable, dst[start+4:start+8])
	crc = crc32.Update(crc, crcTable, dst[body:])
	binary.LittleEndian.PutUint32(dst[start+8:], crc)
	return dst
}

// sizeBound is an upper bound of the length of o's record body, computed
// without encoding it.
func (o *op) sizeBound() int {
	const varint = binary.MaxVarintLen64
	n := 8 + 1 + 8 + 8 + 8 + varint // seq, kind, at; grace/retention and a count
	n += 4*varint + len(o.name) + len(o.purpose.Name) + len(o.purpose.Description) +
		len(o.seg.Name) + len(o.seg.Purpose) + len(o.seg.Description)
	for _, kps := range o.people {
		n += varint + 16*len(kps)
	}
	n += varint + 16*len(o.also)
	n += 8 * len(o.ps)
	for _, name := range o.names {
		n += varint + len(name)
	}
	return n
}

// checkSize refuses a change whose record could pass maxRecordLen,
// before anything is encoded or logged.
func (o *op) checkSize() error {
	if n := o.sizeBound(); n > maxRecordLen {
		return fmt.Errorf("%w: a %s change of up to %d bytes is over the log's limit of %d bytes: split it", errWrite, o.kind, n, maxRecordLen)
	}
	return nil
}

// person returns the one person of a single-person op.
func (o *op) person() []anonymize.KeyedPseudonym {
	if len(o.people) == 0 {
		return nil
	}
	return o.people[0]
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, 1)
	}
	return append(dst, 0)
}

func appendKeyed(dst []byte, kps []anonymize.KeyedPseudonym) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(kps)))
	for _, kp := range kps {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(kp.Pseudonym))
		dst = append(dst, kp.Key[:]...)
	}
	return dst
}

// recordHeader checks the fixed header at the start of b and returns the
// body's length. It does not look at the body.
func recordHeader(b []byte) (int, error) {
	if len(b) < recHeaderLen {
		return 0, fmt.Errorf("%w: %d bytes, shorter than a record header", errRecord, len(b))
	}
	if string(b[:4]) != recMagic {
		return 0, fmt.Errorf("%w: no record magic", errRecord) // the bytes found are not quoted: they may be a pseudonym
	}
	n := binary.LittleEndian.Uint32(b[4:])
	if n > maxRecordLen {
		return 0, fmt.Errorf("%w: length %d is over the limit", errRecord, n)
	}
	return int(n), nil
}

// unixNanoOrZero encodes a time as Unix nanoseconds, the zero time as 0.
func unixNanoOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// timeOrZero decodes unixNanoOrZero.
func timeOrZero(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// decodeRecord decodes the current version's record at the start of b and
// returns its sequence number, op and total length. It never panics, and
// allocates at most in proportion to the record's length.
func decodeRecord(b []byte) (seq uint64, o op, size int, err error) {
	return decodeRecordVersion(b, recVersion)
}

// decodeRecordVersion decodes a record of the given version (1 or 2).
func decodeRecordVersion(b []byte, version int) (seq uint64, o op, size int, err error) {
	n, err := recordHeader(b)
	if err != nil {
		return 0, op{}, 0, err
	}
	if len(b)-recHeaderLen < n {
		return 0, op{}, 0, fmt.Errorf("%w: length %d runs past the end (%d bytes left)", errRecord, n, len(b)-recHeaderLen)
	}
	body := b[recHeaderLen : recHeaderLen+n]
	crc := crc32.Update(0, crcTable, b[4:8])
	crc = crc32.Update(crc, crcTable, body)
	if want := binary.LittleEndian.Uint32(b[8:]); crc != want {
		return 0, op{}, 0, fmt.Errorf("%w: checksum %08x, want %08x", errRecord, crc, want)
	}
	d := decoder{b: body}
	seq = d.u64()
	o.kind = opKind(d.u8())
	o.at = time.Unix(0, int64(d.u64())).UTC()
	switch o.kind {
	case opDefinePurpose:
		o.purpose.Name = d.str()
		o.purpose.Model = ConsentModel(d.u8())
		o.purpose.Description = d.str()
	case opDefine:
		o.seg.Name = d.str()
		o.seg.Purpose = d.str()
		o.seg.Description = d.str()
		o.seg.Retention = time.Duration(d.u64())
		minSize := d.uvarint()
		if o.seg.Retention < 0 || minSize > math.MaxInt32 {
			d.fail("segment retention %d or minimum size %d out of range", o.seg.Retention, minSize)
		}
		o.seg.MinSize = int(minSize)
		o.seg.Sensitive = d.bool()
	case opDrop:
		o.name = d.str()
	case opAdd:
		o.name = d.str()
		n := d.count(1) // each person takes at least one byte
		o.people = make([][]anonymize.KeyedPseudonym, 0, n)
		for range n {
			o.people = append(o.people, d.keyed())
		}
	case opAddPseudonyms:
		o.name = d.str()
		n := d.count(8)
		o.ps = make([]anonymize.Pseudonym, n)
		for i := range o.ps {
			o.ps[i] = anonymize.Pseudonym(d.u64())
		}
	case opRemove:
		o.name = d.str()
		o.people = [][]anonymize.KeyedPseudonym{d.keyed()}
	case opConsent:
		o.name = d.str()
		o.flag = d.bool()
		o.people = [][]anonymize.KeyedPseudonym{d.keyed()}
	case opSuppress:
		o.flag = d.bool()
		n := d.count(1)
		if n > maxOpPurposeList {
			d.fail("%d purposes", n)
		}
		for range n {
			o.names = append(o.names, d.str())
		}
		o.people = [][]anonymize.KeyedPseudonym{d.keyed()}
	case opForget:
		o.flag = d.bool()
		o.people = [][]anonymize.KeyedPseudonym{d.keyed()}
		if version >= 2 {
			o.purgeBy = timeOrZero(int64(d.u64()))
			o.also = d.keyed()
		}
	case opExpire:
	case opRotateKey:
		copy(o.key[:], d.bytes(8))
		o.grace = time.Duration(d.u64())
	default:
		d.fail("unknown op kind %d", uint8(o.kind))
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d bytes left over after a %s op", len(d.b), o.kind)
	}
	if d.err != nil {
		return 0, op{}, 0, d.err
	}
	o.seq, o.version = seq, version
	return seq, o, recHeaderLen + n, nil
}

// decoder reads a record body; the first error sticks and later reads
// return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{errRecord}, args...)...)
	}
	d.b = nil
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.fail("truncated body")
		return make([]byte, max(n, 0)&0xff)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() byte { return d.bytes(1)[0] }

func (d *decoder) u64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail("truncated body")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) bool() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("a flag is neither 0 nor 1")
	return false
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	if n != uvarintLen(v) { // an over-long form: one change, one encoding
		d.fail("varint of %d bytes for a value that takes %d", n, uvarintLen(v))
		return 0
	}
	d.b = d.b[n:]
	return v
}

// uvarintLen is the length of v's shortest uvarint encoding.
func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// count reads a count of items of at least size bytes each, refusing one
// that the rest of the body cannot hold.
func (d *decoder) count(size int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/size) {
		d.fail("count %d does not fit in the %d bytes left", n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	n := d.count(1)
	if n > maxOpString {
		d.fail("a string of %d bytes", n)
		return ""
	}
	return string(d.bytes(n))
}

func (d *decoder) keyed() []anonymize.KeyedPseudonym {
	n := d.count(16)
	if n == 0 {
		return nil
	}
	kps := make([]anonymize.KeyedPseudonym, n)
	for i := range kps {
		kps[i].Pseudonym = anonymize.Pseudonym(d.u64())
		copy(kps[i].Key[:], d.bytes(8))
	}
	return kps
}

// A log file holds frames, one per group commit, each written with one
// write and made durable with one fsync:
//
//	magic   4 bytes "PFYB"
//	length  4 bytes, little endian: the payload's length
//	crc     4 bytes, little endian: CRC-32C of length and payload
//	payload the batch's records, back to back
//
// A crash can tear only the last frame (the next is written after the
// previous fsync returned), so a damaged frame followed by a valid one is
// corruption, and a damaged frame with nothing valid after it is a torn
// write, dropped whole: a batch is kept or lost as a unit.
const (
	frameMagic     = "PFYB"
	frameHeaderLen = 12
	maxFrameLen    = 1<<31 - 1
)

// errFrame is wrapped by every frame decoding error.
var errFrame = errors.New("malformed log frame")

// startFrame appends a frame header to dst, to be completed by endFrame
// once the records follow it.
func startFrame(dst []byte) []byte {
	return append(dst, frameMagic+"\x00\x00\x00\x00\x00\x00\x00\x00"...)
}

// endFrame fills in the header of the frame that starts at dst[start:].
func endFrame(dst []byte, start int) []byte {
	n := len(dst) - start - frameHeaderLen
	binary.LittleEndian.PutUint32(dst[start+4:], uint32(n))
	crc := crc32.Update(0, crcTable, dst[start+4:start+8])
	crc = crc32.Update(crc, crcTable, dst[start+frameHeaderLen:])
	binary.LittleEndian.PutUint32(dst[start+8:], crc)
	return dst
}

// decodeFrame checks the frame at the start of b and returns its payload
// and total size.
func decodeFrame(b []byte) (payload []byte, size int, err error) {
	if len(b) < frameHeaderLen {
		return nil, 0, fmt.Errorf("%w: %d bytes, shorter than a frame header", errFrame, len(b))
	}
	if string(b[:4]) != frameMagic {
		return nil, 0, fmt.Errorf("%w: no frame magic", errFrame) // the bytes found are not quoted: they may be a pseudonym
	}
	n := int(binary.LittleEndian.Uint32(b[4:]))
	if n > maxFrameLen || n > len(b)-frameHeaderLen {
		return nil, 0, fmt.Errorf("%w: length %d runs past the end (%d bytes left)", errFrame, n, len(b)-frameHeaderLen)
	}
	payload = b[frameHeaderLen : frameHeaderLen+n]
	crc := crc32.Update(0, crcTable, b[4:8])
	crc = crc32.Update(crc, crcTable, payload)
	if want := binary.LittleEndian.Uint32(b[8:]); crc != want {
		return nil, 0, fmt.Errorf("%w: checksum %08x, want %08x", errFrame, crc, want)
	}
	return payload, frameHeaderLen + n, nil
}
