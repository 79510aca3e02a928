package personify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/wal"
	"github.com/stretchr/testify/require"
)

// The keys the fuzz targets' engines hold: a rotation to either is
// accepted.
var (
	fuzzKey2 = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	fuzzKey3 = "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
)

func fuzzOptions(t testing.TB) Options {
	return Options{Key: mustKey(t, testKeyHex), K: 2, Now: func() time.Time { return t0 },
		UpcomingKeys: []anonymize.Key{mustKey(t, fuzzKey2), mustKey(t, fuzzKey3)}}
}

// fuzzBase returns an engine with a little of everything: purposes of both
// models, timed and untimed segments, members, consent, suppression, an
// erasure with do-not-re-add, and a rotation in its grace period (with
// people stored under both keys).
func fuzzBase(t testing.TB) *Engine {
	e, err := New(fuzzOptions(t))
	require.NoError(t, err)
	fuzzPopulate(t, e, func(fn func() error) error { return fn() })
	return e
}

// fuzzPopulate makes fuzzBase's writes through do (a replica's writes wait
// for the journal).
func fuzzPopulate(t testing.TB, e *Engine, do func(func() error) error) {
	for _, fn := range []func() error{
		func() error { return e.DefinePurpose(Purpose{Name: "ads", Model: OptOut, Description: "d"}) },
		func() error { return e.DefinePurpose(Purpose{Name: "email", Model: OptIn}) },
		func() error { return e.Define(Segment{Name: "runners", Purpose: "ads"}) },
		func() error { return e.Define(Segment{Name: "recent", Purpose: "ads", Retention: 48 * time.Hour}) },
		func() error { return e.Define(Segment{Name: "news", Purpose: "email", Sensitive: true}) },
		func() error { return e.Add("runners", people(0, 40)...) },
		func() error { return e.Add("recent", people(20, 60)...) },
		func() error { return e.Add("news", people(0, 10)...) },
		func() error { return e.SetConsent(person(1), "email", true) },
		func() error { return e.SetConsent(person(2), "ads", false) },
		func() error { return e.Suppress(person(3)) },
		func() error { return e.Suppress(person(4), "ads") },
		func() error {
			_, err := e.ForgetWith(person(5), ForgetOptions{DoNotReAdd: true})
			return err
		},
		func() error { return e.Link(person(6), device(6), userID(6)) },
		func() error { return e.Link(person(7), person(8)) }, // two people merge
		func() error { return e.Link(person(9), device(6)) }, // the device moves
		func() error { return e.Unlink(userID(6)) },
		func() error {
			return e.DefineCap(Cap{Name: "daily", Purpose: "ads", Max: 3, Window: Window{Kind: Calendar, Period: Day, TimeZone: "Europe/Berlin"}})
		},
		func() error {
			return e.DefineCap(Cap{Name: "hourly", Purpose: "ads", Max: 2, Window: Window{Kind: Rolling, Length: time.Hour}})
		},
		func() error {
			for i := range 12 {
				p, _ := e.Pseudonym(person(i))
				e.Allow(p, "daily")
				e.Allow(p, "hourly")
			}
			return e.FlushCounts(context.Background())
		},
		func() error { return e.RotateKey(mustKey(t, fuzzKey2), 24*time.Hour) },
		func() error { return e.Add("runners", people(35, 45)...) }, // some re-keyed, some new under the new key
	} {
		require.NoError(t, do(fn))
	}
}

// fullDump is stateDump plus what it leaves out: pending erasures and
// receipt keys.
func fullDump(t testing.TB, e *Engine) string {
	var b strings.Builder
	b.WriteString(stateDump(t, e))
	e.mu.RLock()
	for _, p := range e.pending {
		fmt.Fprintf(&b, "pending %d %s %s\n", p.seq, p.at.UTC().Format(time.RFC3339Nano), p.purgeBy.UTC().Format(time.RFC3339Nano))
	}
	e.mu.RUnlock()
	for _, p := range e.receipt.history() {
		fmt.Fprintf(&b, "receipt key %x\n", p)
	}
	return b.String()
}

// roundTrip writes e's snapshot, loads it into a fresh engine with the
// same keys, and checks that both hold the same state; it returns the
// snapshot.
func roundTrip(t testing.TB, e *Engine) []byte {
	var buf bytes.Buffer
	_, err := e.WriteSnapshot(&buf)
	require.NoError(t, err)
	f, err := New(fuzzOptions(t))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.LoadSnapshot(bytes.NewReader(buf.Bytes())), "a snapshot of an accepted state must load")
	e.pending, f.pending = nil, nil // LoadSnapshot drops pending erasures: numbered elsewhere
	require.Equal(t, stateDump(t, e), stateDump(t, f))
	return buf.Bytes()
}

// fuzzOps returns records of every kind, valid against fuzzBase, numbered
// from first, as the seed corpus: one frame payload of records.
func fuzzOps(t testing.TB, first uint64) []byte {
	e := fuzzBase(t)
	defer e.Close()
	kps, err := e.keyedPseudonyms(person(7))
	require.NoError(t, err)
	all, err := e.allKeyedPseudonyms(person(7))
	require.NoError(t, err)
	var b []byte
	for i, o := range []*op{
		{kind: opDefinePurpose, at: t0, purpose: Purpose{Name: "p2", Model: OptIn, Description: "x"}},
		{kind: opDefine, at: t0, seg: Segment{Name: "s2", Purpose: "p2", Retention: time.Hour, MinSize: 3}},
		{kind: opAdd, at: t0, name: "s2", people: [][]anonymize.KeyedPseudonym{kps}},
		{kind: opAddPseudonyms, at: t0, name: "runners", ps: []anonymize.Pseudonym{1, 2, 3, 0xdeadbeef}},
		{kind: opRemove, at: t0, name: "runners", people: [][]anonymize.KeyedPseudonym{kps}},
		{kind: opConsent, at: t0, name: "email", flag: true, people: [][]anonymize.KeyedPseudonym{kps}},
		{kind: opSuppress, at: t0, flag: true, names: []string{"ads"}, people: [][]anonymize.KeyedPseudonym{kps}},
		{kind: opForget, at: t0, flag: true, people: [][]anonymize.KeyedPseudonym{all}, purgeBy: t0.Add(time.Minute)},
		{kind: opRotateKey, at: t0, key: mustKey(t, fuzzKey3).Fingerprint(), grace: time.Hour},
		{kind: opDrop, at: t0, name: "news"},
		{kind: opExpire, at: t0.Add(72 * time.Hour)},
	} {
		b = appendRecord(b, first+uint64(i), o)
	}
	return b
}

// FuzzApplyThenSnapshot checks the property the fleet depends on: any
// sequence of changes that Apply accepts (here: decoded from arbitrary
// bytes and applied the way the log's replay and a replica apply them)
// leaves a state whose snapshot loads and equals it. Nothing panics.
func FuzzApplyThenSnapshot(f *testing.F) {
	f.Add(fuzzOps(f, 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e := fuzzBase(t)
		defer e.Close()
		applied := 0
		for off := 0; off < len(b) && applied < 64; {
			seq, o, n, err := decodeRecord(b[off:])
			if err != nil {
				// Fuzz the body decoder too: the rest, framed as a record.
				if _, o2, _, err2 := decodeRecord(frame(b[off:])); err2 == nil {
					o = o2
					n = len(b) - off
				} else {
					break
				}
			}
			off += n
			o.seq = seq
			_, _ = e.applyRead(&o, "log") // a rotation needs a key the engine holds (fuzzKey2, fuzzKey3)
			applied++
		}
		roundTrip(t, e)
	})
}

// FuzzReplay feeds arbitrary bytes to Open as the log after a snapshot:
// Open either refuses with ErrCorrupt or ErrWrongKey, or opens a state
// whose snapshot loads and equals it. Nothing panics.
func FuzzReplay(f *testing.F) {
	ops := fuzzOps(f, 6) // the five definitions below are records 1 to 5
	framed := wal.EndFrame(append(wal.StartFrame(nil), ops...), 0)
	f.Add(framed)
	f.Add(framed[:len(framed)-3]) // a torn tail
	f.Add(append(bytes.Clone(framed), framed...))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		opts := fuzzOptions(t)
		opts.Durable = DurableOptions{MaintenanceInterval: -1}
		e, err := Open(dir, opts)
		require.NoError(t, err)
		require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
		require.NoError(t, e.DefinePurpose(Purpose{Name: "email", Model: OptIn}))
		require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
		require.NoError(t, e.Define(Segment{Name: "news", Purpose: "email"}))
		require.NoError(t, e.Define(Segment{Name: "recent", Purpose: "ads", Retention: 48 * time.Hour}))
		require.NoError(t, e.Compact())
		logPath := e.store.log.Name()
		require.NoError(t, e.Close())
		fh, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = fh.Write(b)
		require.NoError(t, err)
		require.NoError(t, fh.Close())
		e, err = Open(dir, opts)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongKey) {
				t.Fatalf("Open failed with an error that is neither ErrCorrupt nor ErrWrongKey: %v", err)
			}
			return
		}
		defer e.Close()
		roundTrip(t, e)
	})
}

// FuzzLoadSnapshot feeds arbitrary bytes to LoadSnapshot: it either
// refuses them and leaves the engine exactly as it was, or loads a state
// whose own snapshot loads and equals it. Nothing panics.
func FuzzLoadSnapshot(f *testing.F) {
	e := fuzzBase(f)
	var buf bytes.Buffer
	_, err := e.WriteSnapshot(&buf)
	require.NoError(f, err)
	e.Close()
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:len(buf.Bytes())/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		e := fuzzBase(t)
		defer e.Close()
		before := fullDump(t, e)
		if err := e.LoadSnapshot(bytes.NewReader(b)); err != nil {
			require.Equal(t, before, fullDump(t, e), "a refused snapshot changed the engine")
			return
		}
		roundTrip(t, e)
	})
}

// FuzzReceiptJSON decodes arbitrary JSON as a Receipt: VerifyReceipt never
// panics, and accepts only receipts the engine signed, field for field.
func FuzzReceiptJSON(f *testing.F) {
	e := fuzzBase(f)
	defer e.Close()
	require.NoError(f, e.Add("runners", person(9)))
	r, err := e.ForgetWith(person(9), ForgetOptions{RequestID: "ticket-1", DoNotReAdd: true})
	require.NoError(f, err)
	// The same receipt in every worker process: a fixed ID, signed again.
	r.ID = "0123456789abcdef0123456789abcdef"
	r.Signature = e.receipt.current(e).sign(r.SignedMessage())
	js, err := json.Marshal(r)
	require.NoError(f, err)
	signed := r.SignedMessage()
	pubs := e.ReceiptPublicKeys()
	f.Add(js)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":2,"signing_key":"00","signature":"AAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Receipt
		if json.Unmarshal(b, &got) != nil {
			return
		}
		_ = got.SignedMessage()
		ok := false
		for _, pub := range pubs {
			ok = ok || VerifyReceipt(got, pub) == nil
		}
		if e.VerifyReceipt(got) == nil != ok {
			t.Fatalf("Engine.VerifyReceipt and VerifyReceipt disagree")
		}
		if ok && !slices.Equal(got.SignedMessage(), signed) {
			t.Fatalf("a receipt the engine never signed verifies:\n%s", got.SignedMessage())
		}
	})
}

// FuzzJournalChange feeds arbitrary bytes to a replica as the journal's
// next change: raw (as someone writing straight into the journal's table
// would), or as a change body sealed under the fleet's key in this
// release's format or the previous one's (as a buggy writer holding the
// key would). The replica either refuses the change and is exactly as it
// was, or applies it and its snapshot loads and equals it. Nothing panics.
func FuzzJournalChange(f *testing.F) {
	// fuzzBase's state on a replica, as a snapshot at position n.
	j := &manualJournal{}
	base, err := NewReplica(fuzzOptions(f), j, ReplicaOptions{WriteTimeout: 5 * time.Second})
	require.NoError(f, err)
	fuzzPopulate(f, base, func(fn func() error) error {
		done := make(chan error, 1)
		go func() { done <- fn() }()
		for {
			select {
			case err := <-done:
				return errors.Join(err, j.deliver(base))
			case <-time.After(100 * time.Microsecond):
				require.NoError(f, j.deliver(base))
			}
		}
	})
	var snap bytes.Buffer
	n, _, err := base.WriteReplicaSnapshot(&snap)
	require.NoError(f, err)
	tag := base.SnapshotTag(n, snap.Bytes())
	fp := base.keyring().Current()
	base.Close()
	replica := func(t *testing.T) (*Engine, *manualJournal) {
		j := &manualJournal{log: make([][]byte, n)}
		r := newReplicaT(t, j, func(o *Options) { *o = fuzzOptions(t) })
		require.NoError(t, r.LoadReplicaSnapshot(n, snap.Bytes(), tag))
		return r, j
	}

	ops := fuzzOps(f, 1)
	for off := 0; off < len(ops); {
		_, payload, size, err := wal.DecodeRecord(ops[off:])
		require.NoError(f, err)
		header := make([]byte, 17) // mode, origin, counter
		header[1] = byte(off)
		f.Add(append(bytes.Clone(header), payload...))
		header[0] = 1
		f.Add(append(header, ops[off:off+size]...))
		off += size
	}
	f.Add([]byte{2, 3, 0, 0, 0})
	// Modes: 0, a change encoding, sealed both bare and framed as a record
	// (the two forms a replica reads), which must decode alike; 1, the
	// bytes after the header as they are, sealed; 2, raw bytes, unsealed.
	// With mode 0 and 1 the 16 bytes after the mode byte are the header's
	// origin and counter.
	apply := func(t *testing.T, change []byte) (*Engine, bool) {
		r, j := replica(t)
		before := fullDump(t, r)
		j.put(change)
		if err := j.deliver(r); err != nil {
			require.ErrorIs(t, err, ErrKeyUnavailable)
			require.Equal(t, n, r.Applied(), "a stalled replica stays before the change")
			return r, false
		}
		require.Equal(t, n+1, r.Applied())
		if r.ReplicaStatus().Refused == 1 {
			require.Equal(t, before, fullDump(t, r), "a refused change changed the replica")
			return r, false
		}
		var buf bytes.Buffer
		seq, _, err := r.WriteReplicaSnapshot(&buf)
		require.NoError(t, err)
		c, _ := replica(t)
		require.NoError(t, c.LoadReplicaSnapshot(seq, buf.Bytes(), r.SnapshotTag(seq, buf.Bytes())), "a snapshot of an accepted state must load")
		r.pending, c.pending = nil, nil
		require.Equal(t, stateDump(t, r), stateDump(t, c))
		return r, true
	}
	sealer, err := New(fuzzOptions(f)) // holds the fleet's keys
	require.NoError(f, err)
	f.Cleanup(func() { sealer.Close() })
	seal := func(r *Engine, header, body []byte) []byte {
		c := make([]byte, changeHeaderLen, changeHeaderLen+len(body)+changeTagLen)
		c[0] = changeVersion
		copy(c[1:17], header)
		copy(c[17:], fp[:])
		return r.sealChange(n+1, append(c, body...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		mode, rest := b[0]%3, b[1:]
		if mode == 2 {
			apply(t, rest)
			return
		}
		header := rest[:min(16, len(rest))]
		body := rest[len(header):]
		if mode == 1 {
			apply(t, seal(sealer, header, body))
			return
		}
		if wal.IsRecord(body) { // a record already (it starts with the magic, which no bare encoding does): not a bare form
			apply(t, seal(sealer, header, body))
			return
		}
		framed := wal.AppendRecord(nil, 0, func(d []byte) []byte { return append(d, body...) })
		r1, ok1 := apply(t, seal(sealer, header, body))
		r2, ok2 := apply(t, seal(sealer, header, framed))
		require.Equal(t, ok1, ok2, "bare and framed encodings of one change decode alike")
		r1.pending, r2.pending = nil, nil
		require.Equal(t, stateDump(t, r1), stateDump(t, r2))
	})
}
