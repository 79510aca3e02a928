package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
	"testing/iotest"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// snapshotOf writes a snapshot with build, which may use Writer internals
// to write malformed sections.
func snapshotOf(t testing.TB, build func(w *Writer)) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	require.NoError(t, err)
	build(w)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

func sampleTimed() *Timed {
	tm := NewTimed(time.Hour)
	tm.AddMany([]uint32{1, 2, 3, 100_000}, t0)
	tm.AddMany([]uint32{3, 4}, t0.Add(3*time.Hour))
	tm.Add(5, time.Unix(-3600*5, 0))
	return tm
}

// sampleSnapshot has every section kind, an empty name and an empty set.
func sampleSnapshot(t testing.TB) []byte {
	return snapshotOf(t, func(w *Writer) {
		require.NoError(t, w.Set("runners", New(1, 2, 3, 70_000)))
		require.NoError(t, w.Set("", New()))
		require.NoError(t, w.Blob("meta", -42, []byte("engine data")))
		require.NoError(t, w.Timed("recent", sampleTimed()))
		require.NoError(t, w.Blob("empty blob", 0, nil))
		require.NoError(t, w.Set("nil", nil))
	})
}

// readAll reads every section, returning them and the first error other
// than the final io.EOF.
func readAll(r io.Reader) ([]*Section, error) {
	sr, err := NewReader(r)
	if err != nil {
		return nil, err
	}
	var secs []*Section
	for {
		sec, err := sr.Next()
		if err == io.EOF {
			return secs, nil
		}
		if err != nil {
			return secs, err
		}
		secs = append(secs, sec)
	}
}

func requireSameTimed(t *testing.T, want, got *Timed) {
	t.Helper()
	require.Equal(t, want.Epoch(), got.Epoch())
	var ws, gs []time.Time
	var wsets, gsets [][]uint32
	for at, s := range want.Epochs() {
		ws, wsets = append(ws, at), append(wsets, s.AppendTo(nil))
	}
	for at, s := range got.Epochs() {
		gs, gsets = append(gs, at), append(gsets, s.AppendTo(nil))
	}
	require.Equal(t, ws, gs)
	require.Equal(t, wsets, gsets)
	require.True(t, want.Members().Equal(got.Members()))
}

func TestSnapshotRoundTrip(t *testing.T) {
	data := sampleSnapshot(t)
	readers := map[string]func() io.Reader{
		"bytes.Reader":   func() io.Reader { return bytes.NewReader(data) },
		"bytes.Buffer":   func() io.Reader { return bytes.NewBuffer(bytes.Clone(data)) },
		"SectionReader":  func() io.Reader { return io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))) },
		"OneByteReader":  func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) },
		"trailing bytes": func() io.Reader { return io.MultiReader(bytes.NewReader(data), bytes.NewReader([]byte("junk"))) },
	}
	for name, open := range readers {
		t.Run(name, func(t *testing.T) {
			secs, err := readAll(open())
			require.NoError(t, err)
			require.Len(t, secs, 6)
			kinds := []Kind{KindSet, KindSet, KindBlob, KindTimed, KindBlob, KindSet}
			names := []string{"runners", "", "meta", "recent", "empty blob", "nil"}
			for i, sec := range secs {
				assert.Equal(t, kinds[i], sec.Kind)
				assert.Equal(t, names[i], sec.Name)
			}
			require.Equal(t, []uint32{1, 2, 3, 70_000}, secs[0].Set().AppendTo(nil))
			require.True(t, secs[1].Set().IsEmpty())
			require.Equal(t, "engine data", string(secs[2].Blob()))
			require.Equal(t, int64(-42), secs[2].Aux)
			require.Nil(t, secs[2].Set())
			requireSameTimed(t, sampleTimed(), secs[3].Timed())
			require.Equal(t, int64(time.Hour), secs[3].Aux)
			require.Empty(t, secs[4].Blob())
			require.NotNil(t, secs[5].Set())
			require.True(t, secs[5].Set().IsEmpty())
		})
	}
}

func TestReaderIsSticky(t *testing.T) {
	sr, err := NewReader(bytes.NewReader(snapshotOf(t, func(w *Writer) {})))
	require.NoError(t, err)
	for range 2 {
		_, err := sr.Next()
		require.Equal(t, io.EOF, err)
	}
	data := sampleSnapshot(t)
	sr, err = NewReader(bytes.NewReader(data[:40]))
	require.NoError(t, err)
	_, err1 := sr.Next()
	_, err2 := sr.Next()
	require.ErrorIs(t, err1, ErrTruncated)
	require.Equal(t, err1, err2)
}

func TestWriteSets(t *testing.T) {
	r := rand.New(rand.NewPCG(40, 40))
	sets := map[string]*Set{"b": New(randomValues(r, 5000, 1<<20)...), "a": New(1), "c": nil, "d": New()}
	var one, two bytes.Buffer
	n, err := WriteSets(&one, sets)
	require.NoError(t, err)
	require.Equal(t, int64(one.Len()), n)
	_, err = WriteSets(&two, sets)
	require.NoError(t, err)
	require.Equal(t, one.Bytes(), two.Bytes(), "not deterministic")

	got, err := ReadSets(&one)
	require.NoError(t, err)
	require.Len(t, got, 4)
	for name, s := range sets {
		require.True(t, s.Equal(got[name]), name)
	}
	require.NotNil(t, got["c"])

	empty, err := ReadSets(bytes.NewReader(snapshotOf(t, func(*Writer) {})))
	require.NoError(t, err)
	require.Empty(t, empty)
}

func TestReadSetsRejects(t *testing.T) {
	dup := snapshotOf(t, func(w *Writer) {
		require.NoError(t, w.Set("a", New(1)))
		require.NoError(t, w.Set("a", New(2)))
	})
	_, err := ReadSets(bytes.NewReader(dup))
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, `section 1 "a" at byte 78: duplicate name`)

	_, err = ReadSets(bytes.NewReader(sampleSnapshot(t)))
	require.ErrorContains(t, err, `"meta" at byte`)
	require.ErrorContains(t, err, "a blob section; ReadSets reads only sets")
}

// TestSetPayloadInterop checks that a set section's payload is byte for byte
// what roaring writes, and that roaring reads it back.
func TestSetPayloadInterop(t *testing.T) {
	for name, s := range sampleSets(t) {
		t.Run(name, func(t *testing.T) {
			data := snapshotOf(t, func(w *Writer) { require.NoError(t, w.Set("x", s)) })
			off := headerLen + 1 + 2 + 1 + 8 // past kind, name length, "x", aux
			size := binary.LittleEndian.Uint64(data[off:])
			payload := data[off+16 : off+16+int(size)]
			want, err := s.bitmap().ToBytes()
			require.NoError(t, err)
			require.Equal(t, want, payload)
			require.Equal(t, xxhash.Sum64(payload), binary.LittleEndian.Uint64(data[off+16+int(size):]))

			bm := roaring.New()
			_, err = bm.ReadFrom(bytes.NewReader(payload))
			require.NoError(t, err)
			require.True(t, bm.Equals(s.bitmap()))
		})
	}
}

// header returns a file header with a valid checksum.
func header(version, flags uint16, reserved uint32) []byte {
	h := []byte(magic)
	h = binary.LittleEndian.AppendUint16(h, version)
	h = binary.LittleEndian.AppendUint16(h, flags)
	h = binary.LittleEndian.AppendUint32(h, reserved)
	return binary.LittleEndian.AppendUint64(h, xxhash.Sum64(h))
}

func TestReaderRejectsHeader(t *testing.T) {
	good := sampleSnapshot(t)
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"text", []byte("name,members\nrunners,1 2 3\n"), ErrBadMagic},
		{"short text", []byte("PK"), ErrBadMagic},
		{"text-mode transfer", append([]byte("\x89SEG\n\x1a\n"), good[8:]...), ErrBadMagic},
		{"magic only", []byte(magic), ErrTruncated},
		{"version 2", header(2, 0, 0), ErrVersion},
		{"version 0", header(0, 0, 0), ErrVersion},
		{"unknown flags", header(1, 4, 0), ErrVersion},
		{"reserved bits", header(1, 0, 1), ErrVersion},
		{"header checksum", append(append([]byte{}, good[:16]...), make([]byte, 8)...), ErrChecksum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(tc.data))
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, "segment: snapshot: header: ")
		})
	}
}

// TestReaderRejectsEveryTruncation cuts a snapshot at every byte: each cut
// fails with ErrTruncated, or ErrLength where the input's size is known.
func TestReaderRejectsEveryTruncation(t *testing.T) {
	data := sampleSnapshot(t)
	for cut := range len(data) {
		_, err := readAll(bytes.NewReader(data[:cut]))
		if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrLength) {
			t.Fatalf("cut at %d: got %v, want ErrTruncated or ErrLength", cut, err)
		}
		_, err = readAll(iotest.OneByteReader(bytes.NewReader(data[:cut])))
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at %d, unknown size: got %v, want ErrTruncated", cut, err)
		}
	}
}

// TestReaderRejectsEveryBitFlip flips one bit in every byte: each flip is
// detected.
func TestReaderRejectsEveryBitFlip(t *testing.T) {
	data := sampleSnapshot(t)
	for i := range data {
		for _, bit := range []uint{uint(i % 8), uint(i+3) % 8} {
			bad := bytes.Clone(data)
			bad[i] ^= 1 << bit
			if _, err := readAll(bytes.NewReader(bad)); err == nil {
				t.Fatalf("bit %d of byte %d flipped: read without error", bit, i)
			}
		}
	}
}

func TestReaderRejectsSections(t *testing.T) {
	garbage := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}
	for _, tc := range []struct {
		name  string
		build func(w *Writer)
		want  error
		msg   string
	}{
		{"corrupt set payload", func(w *Writer) { _ = w.bytesSection(KindSet, "bad", 0, garbage) },
			ErrCorrupt, `section 0 "bad" at byte 24: payload: unknown cookie`},
		{"set payload with trailing bytes", func(w *Writer) {
			b, _ := New(1).MarshalBinary()
			_ = w.bytesSection(KindSet, "x", 0, append(b, 0))
		}, ErrCorrupt, "1 bytes after the bitmap"},
		{"set aux", func(w *Writer) { _ = w.bitmapSection(KindSet, "x", 7, New(1)) }, ErrCorrupt, "set section with aux 7, want 0"},
		{"named bucket", func(w *Writer) {
			_ = w.bytesSection(KindTimed, "t", 60, binary.LittleEndian.AppendUint64(nil, 1))
			_ = w.bitmapSection(kindTimedBucket, "b", 60, New(1))
		}, ErrCorrupt, `timed bucket section "b" where bucket 0 of 1`},
		{"bitmap longer than payload", func(w *Writer) {
			b, _ := New(1, 2, 3).MarshalBinary()
			_ = w.bytesSection(KindSet, "x", 0, b[:len(b)-2])
		}, ErrCorrupt, "payload: unexpected end of data"},
		{"unknown kind", func(w *Writer) { _ = w.bytesSection(9, "x", 0, nil) }, ErrCorrupt, "unexpected kind(9) section"},
		{"stray bucket", func(w *Writer) { _ = w.bitmapSection(kindTimedBucket, "", 0, New(1)) }, ErrCorrupt, "unexpected timed bucket section"},
		{"stray trailer", func(w *Writer) { _ = w.bytesSection(kindEnd, "", 0, make([]byte, 8)) }, ErrChecksum, "trailer's checksum"},
		{"named trailer", func(w *Writer) { _ = w.bytesSection(kindEnd, "x", 0, make([]byte, 8)) }, ErrCorrupt, "trailer with a name"},
		{"trailer count", func(w *Writer) { w.count++ }, ErrCorrupt, "trailer counts 1 sections, read 0"},
		{"set too long", func(w *Writer) { _ = w.sectionHeader(KindSet, "x", 0, maxPortableSize+1) }, ErrLength, "over the maximum"},
		{"blob too long", func(w *Writer) { _ = w.sectionHeader(KindBlob, "x", 0, MaxBlobLen+1) }, ErrLength, "over the maximum"},
		{"timed payload length", func(w *Writer) { _ = w.bytesSection(KindTimed, "t", 60, garbage) }, ErrLength, "want 8"},
		{"timed epoch", func(w *Writer) { _ = w.bytesSection(KindTimed, "t", 0, make([]byte, 8)) }, ErrCorrupt, "epoch 0 out of range"},
		{"timed missing bucket", func(w *Writer) {
			_ = w.bytesSection(KindTimed, "t", 60, binary.LittleEndian.AppendUint64(nil, 1))
			_ = w.Set("x", New(1))
		}, ErrCorrupt, `set section "x" where bucket 0 of 1 of timed "t" belongs`},
		{"bucket unaligned", timedWith(60, []int64{61}, New(1)), ErrCorrupt, "not an epoch start"},
		{"bucket out of range", timedWith(60, []int64{-1 << 63}, New(1)), ErrCorrupt, "not an epoch start"},
		{"buckets unordered", timedWith(60, []int64{120, 60}, New(1), New(2)), ErrCorrupt, "not after the previous"},
		{"buckets overlap", timedWith(60, []int64{60, 120}, New(1, 2), New(2)), ErrCorrupt, "overlaps"},
		{"empty bucket", timedWith(60, []int64{60}, New()), ErrCorrupt, "empty bucket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := snapshotOf(t, tc.build)
			for _, r := range []io.Reader{bytes.NewReader(data), iotest.OneByteReader(bytes.NewReader(data))} {
				_, err := readAll(r)
				require.ErrorIs(t, err, tc.want)
				require.ErrorContains(t, err, tc.msg)
			}
		})
	}
}

// timedWith writes a timed section with the given buckets, unchecked.
func timedWith(epoch int64, starts []int64, sets ...*Set) func(w *Writer) {
	return func(w *Writer) {
		_ = w.bytesSection(KindTimed, "t", epoch, binary.LittleEndian.AppendUint64(nil, uint64(len(sets))))
		for i, s := range sets {
			_ = w.bitmapSection(kindTimedBucket, "", starts[i], s)
		}
	}
}

// sectionBounds returns where each section of a snapshot starts, and where
// its trailer starts.
func sectionBounds(t *testing.T, data []byte) []int {
	t.Helper()
	var bounds []int
	for off := headerLen; off < len(data); {
		bounds = append(bounds, off)
		n := int(binary.LittleEndian.Uint16(data[off+1:]))
		size := int(binary.LittleEndian.Uint64(data[off+11+n:]))
		off += 27 + n + size + 8
	}
	return bounds
}

func TestReaderRejectsRearrangedSections(t *testing.T) {
	data := snapshotOf(t, func(w *Writer) {
		require.NoError(t, w.Set("a", New(1)))
		require.NoError(t, w.Set("b", New(2)))
		require.NoError(t, w.Set("c", New(3)))
	})
	b := sectionBounds(t, data) // a, b, c, trailer
	require.Len(t, b, 4)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for name, bad := range map[string][]byte{
		"dropped":         cat(data[:b[1]], data[b[2]:]),
		"swapped":         cat(data[:b[1]], data[b[2]:b[3]], data[b[1]:b[2]], data[b[3]:]),
		"duplicated":      cat(data[:b[2]], data[b[1]:]),
		"missing trailer": data[:b[3]],
	} {
		t.Run(name, func(t *testing.T) {
			_, err := readAll(bytes.NewReader(bad))
			require.Error(t, err)
			if name == "missing trailer" {
				require.ErrorIs(t, err, ErrTruncated)
				require.ErrorContains(t, err, "snapshot ends before its trailer")
			} else {
				require.ErrorIs(t, err, ErrChecksum)
			}
		})
	}
	t.Run("payload checksum", func(t *testing.T) {
		bad := bytes.Clone(data)
		bad[b[1]-1] ^= 1 // last byte of section a's payload checksum
		_, err := readAll(bytes.NewReader(bad))
		require.ErrorIs(t, err, ErrChecksum)
		require.ErrorContains(t, err, `segment: snapshot: section 0 "a" at byte 24: payload checksum mismatch`)
	})
	t.Run("damage shows as checksum, not corruption", func(t *testing.T) {
		bad := bytes.Clone(data)
		bad[b[0]+27+1] ^= 0xff // the first cookie byte of section a's payload
		_, err := readAll(bytes.NewReader(bad))
		require.ErrorIs(t, err, ErrChecksum)
		require.NotErrorIs(t, err, ErrCorrupt)
	})
	t.Run("name too long", func(t *testing.T) {
		bad := bytes.Clone(data)
		binary.LittleEndian.PutUint16(bad[b[0]+1:], MaxNameLen+1)
		_, err := readAll(bytes.NewReader(bad))
		require.ErrorIs(t, err, ErrLength)
	})
}

// TestReaderAllocatesLittle checks that a short input claiming a huge
// payload fails fast, allocating about what it holds.
func TestReaderAllocatesLittle(t *testing.T) {
	data := snapshotOf(t, func(w *Writer) {
		_ = w.sectionHeader(KindBlob, "huge", 0, MaxBlobLen) // 1 TiB claimed
		_ = w.write(make([]byte, 1000))
	})
	for name, open := range map[string]func() io.Reader{
		"known size":   func() io.Reader { return bytes.NewReader(data) },
		"unknown size": func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) },
	} {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := readAll(open())
			runtime.ReadMemStats(&after)
			if name == "known size" {
				require.ErrorIs(t, err, ErrLength)
			} else {
				require.ErrorIs(t, err, ErrTruncated)
			}
			require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(512<<10))
		})
	}
}

// failWriter fails after n bytes and must never be closed.
type failWriter struct {
	t *testing.T
	n int
}

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return f.n, io.ErrShortWrite
	}
	f.n -= len(p)
	return len(p), nil
}

func (f *failWriter) Close() error {
	f.t.Error("Writer closed the io.Writer")
	return nil
}

func TestWriterErrors(t *testing.T) {
	w, err := NewWriter(&failWriter{t: t, n: 100})
	require.NoError(t, err) // buffered
	require.NoError(t, w.Set("a", New(1)))
	err = w.Close()
	require.ErrorIs(t, err, io.ErrShortWrite)
	require.Equal(t, err, w.Set("b", New(2)), "errors are sticky")

	w, err = NewWriter(io.Discard)
	require.NoError(t, err)
	long := string(make([]byte, MaxNameLen+1))
	require.ErrorContains(t, w.Set(long, New(1)), "over MaxNameLen")

	w, err = NewWriter(io.Discard)
	require.NoError(t, err)
	require.Error(t, w.Timed("t", nil))
	w, err = NewWriter(io.Discard)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.ErrorContains(t, w.Close(), "closed")
	require.ErrorContains(t, w.Blob("x", 0, nil), "closed")

	_, err = WriteSets(&failWriter{t: t, n: 10}, map[string]*Set{"a": New(1)})
	require.ErrorIs(t, err, io.ErrShortWrite)
}

func TestReaderReportsIOErrors(t *testing.T) {
	data := sampleSnapshot(t)
	_, err := readAll(io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(io.ErrClosedPipe)))
	require.ErrorIs(t, err, io.ErrClosedPipe)
	require.NotErrorIs(t, err, ErrTruncated)
}
