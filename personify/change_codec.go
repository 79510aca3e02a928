package personify

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/wal"
)

// A change's encoding: the payload of a log record (internal/wal frames
// it, with its sequence number and checksum), and of a fleet's journal
// change (replica.go seals it):
//
//	kind (1), at (8, Unix ns LE), then by kind:
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
//	link            u8 by-pseudonym, uvarint people, each: uvarint n, n x (u8 kind, keyed)
//	unlink          keyed
//	define-cap      str name, str purpose, str description, uvarint max, u8 window kind, i64 length, u8 period, str time zone
//	drop-cap        str name
//	impressions     str cap, uvarint n, n x (u64 pseudonym, i64 at, Unix ns)
//
// where str is uvarint length and bytes, keyed is uvarint n and n x
// (u64 pseudonym, 8-byte key fingerprint), and people is uvarint n and n x
// keyed. A change is valid only if it decodes exactly, with nothing left
// over, and every varint in it is in its shortest form (so that one change
// has exactly one encoding).
//
// Version 1 (logs written by earlier releases, "PFYLOG1") lacks the forget
// record's purge-by and also-list; version 2 is what is written now.
const recVersion = 2

// maxRecordLen bounds one change's encoding; a durable or replicated
// engine refuses larger changes before logging them (op.checkSize).
const maxRecordLen = wal.MaxRecordLen

// errRecord is wrapped by every change decoding error.
var errRecord = wal.ErrRecord

// appendRecord appends the log record of o with sequence number seq.
func appendRecord(dst []byte, seq uint64, o *op) []byte {
	return wal.AppendRecord(dst, seq, func(d []byte) []byte { return appendChange(d, o) })
}

// appendChange appends the encoding of o.
func appendChange(dst []byte, o *op) []byte {
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
	case opLink:
		dst = appendBool(dst, o.flag)
		dst = binary.AppendUvarint(dst, uint64(len(o.links)))
		for _, g := range o.links {
			dst = binary.AppendUvarint(dst, uint64(len(g)))
			for _, id := range g {
				dst = append(dst, byte(id.kind))
				dst = appendKeyed(dst, id.kps)
			}
		}
	case opUnlink:
		dst = appendKeyed(dst, o.person())
	case opDefineCap:
		c := o.cap
		dst = appendStr(dst, c.Name)
		dst = appendStr(dst, c.Purpose)
		dst = appendStr(dst, c.Description)
		dst = binary.AppendUvarint(dst, uint64(max(c.Max, 0)))
		dst = append(dst, byte(c.Window.Kind))
		dst = binary.LittleEndian.AppendUint64(dst, uint64(c.Window.Length))
		dst = append(dst, byte(c.Window.Period))
		dst = appendStr(dst, c.Window.TimeZone)
	case opDropCap:
		dst = appendStr(dst, o.name)
	case opImpressions:
		dst = appendStr(dst, o.name)
		dst = binary.AppendUvarint(dst, uint64(len(o.imps)))
		for _, im := range o.imps {
			dst = binary.LittleEndian.AppendUint64(dst, uint64(im.p))
			dst = binary.LittleEndian.AppendUint64(dst, uint64(im.at))
		}
	}
	return dst
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

// decodeRecord decodes the current version's log record at the start of b
// and returns its sequence number, op and total length. It never panics,
// and allocates at most in proportion to the record's length.
func decodeRecord(b []byte) (seq uint64, o op, size int, err error) {
	seq, payload, size, err := wal.DecodeRecord(b)
	if err != nil {
		return 0, op{}, 0, err
	}
	if o, err = decodeChange(payload, recVersion); err != nil {
		return 0, op{}, 0, err
	}
	o.seq = seq
	return seq, o, size, nil
}

// decodeChange decodes a change of the given version (1 or 2).
func decodeChange(b []byte, version int) (o op, err error) {
	d := decoder{b: b}
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
	case opLink:
		o.flag = d.bool()
		n := d.count(1)
		o.links = make([][]linkID, 0, n)
		for range n {
			m := d.count(2) // a kind and a count at least
			g := make([]linkID, 0, m)
			for range m {
				kind := anonymize.Kind(d.u8())
				g = append(g, linkID{kind: kind, kps: d.keyed()})
			}
			o.links = append(o.links, g)
		}
	case opUnlink:
		o.people = [][]anonymize.KeyedPseudonym{d.keyed()}
	case opDefineCap:
		o.cap.Name = d.str()
		o.cap.Purpose = d.str()
		o.cap.Description = d.str()
		n := d.uvarint()
		if n > MaxCapCount {
			d.fail("cap maximum %d out of range", n)
		}
		o.cap.Max = int(n)
		o.cap.Window.Kind = WindowKind(d.u8())
		o.cap.Window.Length = time.Duration(d.u64())
		o.cap.Window.Period = Period(d.u8())
		o.cap.Window.TimeZone = d.str()
	case opDropCap:
		o.name = d.str()
	case opImpressions:
		o.name = d.str()
		n := d.count(16)
		o.imps = make([]impression, n)
		for i := range o.imps {
			o.imps[i] = impression{p: anonymize.Pseudonym(d.u64()), at: int64(d.u64())}
		}
	default:
		d.fail("unknown op kind %d", uint8(o.kind))
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d bytes left over after a %s op", len(d.b), o.kind)
	}
	if d.err != nil {
		return op{}, d.err
	}
	o.version = version
	return o, nil
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
