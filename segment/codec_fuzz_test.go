package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"testing/iotest"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/cespare/xxhash/v2"
)

// snapshotSentinels are the errors a Reader may return for bad input.
var snapshotSentinels = []error{ErrBadMagic, ErrVersion, ErrTruncated, ErrLength, ErrChecksum, ErrCorrupt}

// FuzzReadSnapshot checks that reading never panics, fails only with the
// package's sentinels, agrees between known-size and streamed input, and
// that what it reads writes back to an equivalent snapshot. Each input is
// also read with its checksums recomputed, so that mutations reach the
// decoders behind them. The seed corpus is in testdata/fuzz.
func FuzzReadSnapshot(f *testing.F) {
	f.Add(sampleSnapshot(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSnapshot(t, data)
		checkSnapshot(t, fixChecksums(data))
	})
}

func checkSnapshot(t *testing.T, data []byte) {
	secs, err := readAll(bytes.NewReader(data))
	streamed, streamErr := readAll(iotest.OneByteReader(bytes.NewReader(data)))
	if (err == nil) != (streamErr == nil) || len(secs) != len(streamed) {
		t.Fatalf("known size: %d sections, %v; streamed: %d sections, %v", len(secs), err, len(streamed), streamErr)
	}
	if err != nil {
		for _, e := range []error{err, streamErr} {
			if !isSentinel(e) {
				t.Fatalf("error %v wraps none of the sentinels", e)
			}
		}
		return
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range secs {
		switch sec.Kind {
		case KindSet:
			err = w.Set(sec.Name, sec.Set())
		case KindBlob:
			err = w.Blob(sec.Name, sec.Aux, sec.Blob())
		case KindTimed:
			err = w.Timed(sec.Name, sec.Timed())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := readAll(&buf)
	if err != nil {
		t.Fatalf("rewritten snapshot does not read: %v", err)
	}
	if describe(secs) != describe(again) {
		t.Fatalf("rewritten snapshot differs:\n%s\n%s", describe(secs), describe(again))
	}
}

func isSentinel(err error) bool {
	for _, s := range snapshotSentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// describe renders sections for comparison.
func describe(secs []*Section) string {
	var b bytes.Buffer
	for _, s := range secs {
		fmt.Fprintf(&b, "%s %q %d %v %q", s.Kind, s.Name, s.Aux, s.Set().AppendTo(nil), s.Blob())
		if s.Timed() != nil {
			for at, set := range s.Timed().Epochs() {
				fmt.Fprintf(&b, " %d:%v", at.UnixNano(), set.AppendTo(nil))
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// fixChecksums returns data with every checksum it can locate recomputed:
// the header's, each section's, and the trailer's chain.
func fixChecksums(data []byte) []byte {
	b := bytes.Clone(data)
	if len(b) < headerLen {
		return b
	}
	binary.LittleEndian.PutUint64(b[16:], xxhash.Sum64(b[:16]))
	chain := xxhash.New()
	for off := headerLen; off+3 <= len(b); {
		n := int(binary.LittleEndian.Uint16(b[off+1:]))
		body := off + 27 + n
		if body > len(b) {
			break
		}
		size := binary.LittleEndian.Uint64(b[off+11+n:])
		if size > uint64(len(b)-body) || uint64(len(b)-body)-size < 8 {
			break
		}
		payload := b[body : body+int(size)]
		if Kind(b[off]) == kindEnd && size == 8 {
			binary.LittleEndian.PutUint64(payload, chain.Sum64())
		}
		var sums [16]byte
		binary.LittleEndian.PutUint64(sums[:], xxhash.Sum64(b[off:off+19+n]))
		binary.LittleEndian.PutUint64(sums[8:], xxhash.Sum64(payload))
		copy(b[off+19+n:], sums[:8])
		copy(b[body+int(size):], sums[8:])
		_, _ = chain.Write(sums[:])
		off = body + int(size) + 8
	}
	return b
}

// FuzzSetUnmarshal checks that decoding a Set never panics, fails only with
// ErrCorrupt, agrees between UnmarshalBinary and ReadFrom, accepts only what
// roaring's own Validate accepts, and round-trips what it accepts.
func FuzzSetUnmarshal(f *testing.F) {
	for _, s := range sampleSets(&testing.T{}) {
		if s.SerializedSize() < 4096 {
			b, _ := s.MarshalBinary()
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Set
		err := s.UnmarshalBinary(data)
		var streamed Set
		n, streamErr := streamed.ReadFrom(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("UnmarshalBinary: %v does not wrap ErrCorrupt", err)
			}
			if streamErr == nil && n == int64(len(data)) {
				t.Fatalf("ReadFrom accepted what UnmarshalBinary rejected: %v", err)
			}
			if streamErr != nil && !errors.Is(streamErr, ErrCorrupt) {
				t.Fatalf("ReadFrom: %v does not wrap ErrCorrupt", streamErr)
			}
			if roaringAccepts(data) {
				t.Fatalf("rejected a bitmap roaring's decoder and Validate accept: %v", err)
			}
			return
		}
		if streamErr != nil || n != int64(len(data)) || !streamed.Equal(&s) {
			t.Fatalf("ReadFrom disagrees: %d bytes, %v", n, streamErr)
		}
		if err := s.bitmap().Validate(); err != nil {
			t.Fatalf("accepted a bitmap roaring's Validate rejects: %v", err)
		}
		out, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var again Set
		if err := again.UnmarshalBinary(out); err != nil || !again.Equal(&s) {
			t.Fatalf("round trip failed: %v", err)
		}
		s.Add(12345) // the decoded set is usable
		s.Remove(12345)
		s.Or(&again)
	})
}

// roaringAccepts reports whether roaring's own decoder and Validate accept
// data whole.
func roaringAccepts(data []byte) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	bm := roaring.New()
	n, err := bm.ReadFrom(bytes.NewReader(data))
	return err == nil && n == int64(len(data)) && bm.Validate() == nil
}
