package personify

// Regression tests for promises that used to break at the edges: a
// restart, a fleet, a key rotation, a damaged or hostile input. Each one
// failed on the code before the fix.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/wal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pseudonymBytes returns the forms a pseudonym could take in a file.
func pseudonymBytes(p anonymize.Pseudonym) [][]byte {
	var le, be [8]byte
	binary.LittleEndian.PutUint64(le[:], uint64(p))
	binary.BigEndian.PutUint64(be[:], uint64(p))
	return [][]byte{le[:], be[:], []byte(p.String())}
}

func dirHoldsAny(t *testing.T, dir string, needles [][]byte) bool {
	for _, n := range needles {
		if dirHolds(t, dir, n) {
			return true
		}
	}
	return false
}

// An erasure's deadline survives a restart: a restarted engine compacts by
// the receipt's PurgeBy without waiting for the log to grow.
func TestPurgeDeadlineSurvivesRestart(t *testing.T) {
	for _, overdue := range []bool{false, true} {
		t.Run(fmt.Sprintf("overdue=%t", overdue), func(t *testing.T) {
			d := newDurableEnv(t)
			const within = 400 * time.Millisecond
			dopts := DurableOptions{MaintenanceInterval: time.Hour, PurgeWithin: within}
			e, err := Open(d.dir, durable(d.opts, dopts))
			require.NoError(t, err)
			require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
			require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
			require.NoError(t, e.Add("runners", people(0, 20)...))
			require.NoError(t, e.Compact()) // the person is in the snapshot too
			p := e.mustPseudonym(t, person(3))
			r, err := e.Forget(person(3))
			require.NoError(t, err)
			assert.Equal(t, r.ErasedAt.Add(within), r.PurgeBy)
			require.NoError(t, e.Close()) // before maintenance compacted
			require.True(t, dirHoldsAny(t, d.dir, pseudonymBytes(p)), "the files still hold the person")

			if overdue {
				d.clock.Advance(2 * within) // the engine was down past the deadline
			}
			e, err = Open(d.dir, durable(d.opts, dopts))
			require.NoError(t, err)
			defer e.Close()
			if overdue { // complete before Open returned
				assert.True(t, e.Purged(r))
			} else {
				require.Eventually(t, func() bool { return e.Purged(r) }, within, 5*time.Millisecond)
			}
			assert.False(t, dirHoldsAny(t, d.dir, pseudonymBytes(p)), "no file holds the person after Purged")
			assert.Zero(t, e.Stats().PendingErasures)
		})
	}
}

// The pending erasures are state: a snapshot written before the purge
// carries them, so a restart from that snapshot still schedules them.
func TestPendingErasuresInSnapshot(t *testing.T) {
	d := newDurableEnv(t)
	fs := &seqFailFS{}
	dopts := DurableOptions{MaintenanceInterval: -1, PurgeWithin: time.Hour, fs: fs}
	e, err := Open(d.dir, durable(d.opts, dopts))
	require.NoError(t, err)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", people(0, 20)...))
	r, err := e.Forget(person(3))
	require.NoError(t, err)
	st := e.Stats()
	assert.Equal(t, 1, st.PendingErasures)
	assert.Equal(t, t0, st.OldestPendingErasure)
	fs.failNth(2) // the snapshot is in place, the old files stay: not purged yet
	require.Error(t, e.Compact())
	require.False(t, e.Purged(r))
	require.NoError(t, e.Close())
	e, err = Open(d.dir, durable(d.opts, dopts)) // the snapshot holds the pending erasure, the log nothing after it
	require.NoError(t, err)
	defer e.Close()
	// Open's compaction removed the old files: the erasure is complete.
	assert.True(t, e.Purged(r))
	assert.Zero(t, e.Stats().PendingErasures)
}

// Receipts verify after a restart, on every replica, and after a key
// rotation (the engine keeps the public keys of earlier receipt keys, in
// its snapshots, even once the keys that made them are destroyed).
func TestReceiptsVerifyForever(t *testing.T) {
	d := newDurableEnv(t)
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, err)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads", Retention: time.Hour}))
	require.NoError(t, e.Add("runners", people(0, 10)...))
	r1, err := e.Forget(person(1))
	require.NoError(t, err)
	pub1 := e.ReceiptPublicKey()
	require.NoError(t, VerifyReceipt(r1, pub1))
	assert.Equal(t, hex.EncodeToString(pub1), r1.SigningKey)
	require.NoError(t, e.Close())

	// Same key, another process: the same receipt key.
	e, err = Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, err)
	assert.Equal(t, pub1, e.ReceiptPublicKey())
	require.NoError(t, VerifyReceipt(r1, e.ReceiptPublicKey()))
	mem, err := New(Options{Key: mustKey(t, testKeyHex)}) // any engine with the key
	require.NoError(t, err)
	assert.Equal(t, pub1, mem.ReceiptPublicKey())

	// A rotation: new receipts under the new key's receipt key; the old
	// receipt still verifies through the engine.
	next := anonymize.GenerateKey()
	require.NoError(t, e.RotateKey(next, time.Hour))
	r2, err := e.Forget(person(2))
	require.NoError(t, err)
	pub2 := e.ReceiptPublicKey()
	assert.NotEqual(t, pub1, pub2)
	require.NoError(t, VerifyReceipt(r2, pub2))
	require.NoError(t, e.VerifyReceipt(r1))
	require.NoError(t, e.VerifyReceipt(r2))
	assert.Equal(t, []ed25519.PublicKey{pub2, pub1}, e.ReceiptPublicKeys())
	// The old key's grace ends: it is destroyed; a snapshot keeps its
	// receipt key's public half.
	d.clock.Advance(2 * time.Hour)
	_, err = e.Expire(d.clock.Now())
	require.NoError(t, err)
	require.NoError(t, e.Compact())
	require.NoError(t, e.Close())
	o := d.opts
	o.Key = next // the old key is gone for good
	e, err = Open(d.dir, durable(o, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, err)
	defer e.Close()
	require.NoError(t, e.VerifyReceipt(r1), "a receipt from before the rotation, after the old key was destroyed")
	require.NoError(t, e.VerifyReceipt(r2))

	// The signature binds the log position and the signing key.
	bad := r2
	bad.Seq++
	assert.ErrorIs(t, VerifyReceipt(bad, pub2), ErrBadReceipt)
	bad = r2
	bad.SigningKey = hex.EncodeToString(pub1)
	assert.ErrorIs(t, VerifyReceipt(bad, pub2), ErrBadReceipt)
	assert.ErrorIs(t, VerifyReceipt(r2, pub1), ErrBadReceipt)
	assert.ErrorIs(t, e.VerifyReceipt(bad), ErrBadReceipt)
}

// manualJournal is a Journal whose changes reach each replica only when
// the test delivers them, so that a test can hold a replica behind.
type manualJournal struct {
	mu      sync.Mutex
	log     [][]byte
	checker func(anonymize.Fingerprint) error // nil: no KeyChecker
}

func (j *manualJournal) Append(_ context.Context, change []byte, seal func(uint64, []byte) []byte) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.log = append(j.log, seal(uint64(len(j.log))+1, bytes.Clone(change)))
	return uint64(len(j.log)), nil
}

// put stores raw bytes as the next change, as someone writing straight
// into the journal's table would.
func (j *manualJournal) put(b []byte) uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.log = append(j.log, b)
	return uint64(len(j.log))
}

// deliver applies every change e has not applied yet, and returns the
// first error.
func (j *manualJournal) deliver(e *Engine) error {
	for {
		j.mu.Lock()
		next := e.Applied() + 1
		if next > uint64(len(j.log)) {
			j.mu.Unlock()
			return nil
		}
		c := j.log[next-1]
		j.mu.Unlock()
		if err := e.Apply(next, c); err != nil {
			return err
		}
	}
}

type checkingJournal struct{ *manualJournal }

func (j checkingJournal) CheckKey(_ context.Context, fp anonymize.Fingerprint) error {
	return j.checker(fp)
}

// write runs a replica's write in the background (it waits for its own
// change to come back from the journal) and delivers until it returns.
func (j *manualJournal) write(t *testing.T, e *Engine, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	for {
		select {
		case err := <-done:
			require.NoError(t, j.deliver(e))
			return err
		case <-time.After(time.Millisecond):
			if err := j.deliver(e); err != nil {
				return err
			}
		}
	}
}

func newReplicaT(t *testing.T, j Journal, mutate ...func(*Options)) *Engine {
	t.Helper()
	clock := &fakeClock{t: t0}
	o := Options{Key: mustKey(t, testKeyHex), K: 1, Now: clock.Now}
	for _, m := range mutate {
		m(&o)
	}
	e, err := NewReplica(o, j, ReplicaOptions{WriteTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	return e
}

// A replica that lacks the key the fleet rotates to stops at the rotation
// (never applying anything after it, so it never diverges), says so, and
// refuses writes and erasures; it never issues a receipt for an erasure it
// could not complete. A rotation computed against a fleet that knows its
// replicas' keys is refused up front.
func TestReplicaWithoutTheNewKeyStalls(t *testing.T) {
	next := anonymize.GenerateKey()
	j := &manualJournal{}
	a := newReplicaT(t, j, func(o *Options) { o.UpcomingKeys = []anonymize.Key{next} })
	b := newReplicaT(t, j) // not given the new key
	require.NoError(t, j.write(t, a, func() error { return a.DefinePurpose(Purpose{Name: "ads", Model: OptOut}) }))
	require.NoError(t, j.write(t, a, func() error { return a.Define(Segment{Name: "runners", Purpose: "ads"}) }))
	require.NoError(t, j.write(t, a, func() error { return a.Add("runners", people(0, 5)...) }))
	require.NoError(t, j.deliver(b))
	require.NoError(t, j.write(t, a, func() error { return a.RotateKey(next, time.Hour) }))
	before := b.Applied()
	err := j.deliver(b)
	require.ErrorIs(t, err, ErrKeyUnavailable)
	assert.Contains(t, err.Error(), next.Fingerprint().String())
	assert.Equal(t, before, b.Applied(), "nothing at or after the rotation is applied")
	st := b.ReplicaStatus()
	require.ErrorIs(t, st.Stalled, ErrKeyUnavailable)
	// Writes and erasures on the stalled replica are refused, with no receipt.
	r, err := b.Forget(person(1))
	require.ErrorIs(t, err, ErrKeyUnavailable)
	assert.Zero(t, r.Signature)
	require.ErrorIs(t, b.Add("runners", person(9)), ErrKeyUnavailable)
	// The rest of the fleet goes on; b applies nothing more.
	require.NoError(t, j.write(t, a, func() error { return a.Add("runners", person(7)) }))
	require.ErrorIs(t, j.deliver(b), ErrKeyUnavailable)
	assert.Equal(t, before, b.Applied())

	// A restart with the key catches up.
	c := newReplicaT(t, j, func(o *Options) { o.UpcomingKeys = []anonymize.Key{next} })
	require.NoError(t, j.deliver(c))
	assert.Equal(t, stateDump(t, a), stateDump(t, c))
	assert.Equal(t, next.Fingerprint(), c.KeyFingerprint())

	// With a journal that knows the live replicas' keys, the rotation is
	// refused while one of them lacks the key.
	kj := checkingJournal{&manualJournal{}}
	kj.checker = func(fp anonymize.Fingerprint) error { return fmt.Errorf("1 of 2 live replicas lack key %s", fp) }
	d := newReplicaT(t, kj, func(o *Options) { o.UpcomingKeys = []anonymize.Key{next} })
	err = d.RotateKey(next, time.Hour)
	require.ErrorContains(t, err, "live replicas lack key")
	assert.Empty(t, kj.log, "nothing was appended")
}

// An erasure computed under the keyring before a rotation (its replica had
// not seen the rotation yet) is refused on every replica: a receipt is
// never issued for a person left stored under the new key.
func TestErasureComputedBeforeRotationIsRefused(t *testing.T) {
	next := anonymize.GenerateKey()
	j := &manualJournal{}
	up := func(o *Options) { o.UpcomingKeys = []anonymize.Key{next} }
	a, b := newReplicaT(t, j, up), newReplicaT(t, j, up)
	require.NoError(t, j.write(t, a, func() error { return a.DefinePurpose(Purpose{Name: "ads", Model: OptOut}) }))
	require.NoError(t, j.write(t, a, func() error { return a.Define(Segment{Name: "runners", Purpose: "ads"}) }))
	require.NoError(t, j.deliver(b))
	require.NoError(t, j.write(t, a, func() error { return a.RotateKey(next, time.Hour) }))
	// The person arrives after the rotation: stored under the new key only.
	require.NoError(t, j.write(t, a, func() error { return a.Add("runners", person(1)) }))
	// b has not applied the rotation: its Forget is computed under the old key.
	done := make(chan error, 1)
	go func() {
		_, err := b.Forget(person(1))
		done <- err
	}()
	require.Eventually(t, func() bool { j.mu.Lock(); defer j.mu.Unlock(); return len(j.log) == 5 }, 5*time.Second, time.Millisecond)
	require.NoError(t, j.deliver(b))
	err := <-done
	require.ErrorIs(t, err, ErrInvalidChange)
	require.ErrorIs(t, err, ErrKeyChanged, "the caller learns to retry")
	require.NoError(t, j.deliver(a))
	for _, e := range []*Engine{a, b} {
		p, err := e.Pseudonym(person(1))
		require.NoError(t, err)
		assert.True(t, e.In(p, "runners"), "the refused erasure changed nothing")
		assert.Equal(t, uint64(1), e.ReplicaStatus().Refused)
	}
	// Retried after the rotation, it covers every key and completes.
	var r Receipt
	require.NoError(t, j.write(t, b, func() error {
		var err error
		r, err = b.Forget(person(1))
		return err
	}))
	require.NoError(t, a.VerifyReceipt(r))
	assert.Len(t, r.Pseudonyms, 2, "one pseudonym per key")
	assert.Equal(t, []ErasedSegment{{Name: "runners", Memberships: 1}}, r.Segments)
	require.NoError(t, j.deliver(a))
	for _, e := range []*Engine{a, b} {
		p, _ := e.Pseudonym(person(1))
		assert.False(t, e.In(p, "runners"))
	}
}

// One hostile or damaged row changes nothing and stops nothing: every
// replica refuses it alike and applies the rows after it; the fleet's
// snapshots still load.
func TestJournalRowsAreValidatedAndAuthenticated(t *testing.T) {
	j := &manualJournal{}
	a, b := newReplicaT(t, j), newReplicaT(t, j)
	require.NoError(t, j.write(t, a, func() error { return a.DefinePurpose(Purpose{Name: "ads", Model: OptOut}) }))
	require.NoError(t, j.write(t, a, func() error { return a.Define(Segment{Name: "runners", Purpose: "ads"}) }))
	require.NoError(t, j.write(t, a, func() error { return a.Add("runners", people(0, 5)...) }))
	require.NoError(t, j.deliver(b))
	want := stateDump(t, a)

	envelope := func(o *op) []byte {
		c := make([]byte, changeHeaderLen)
		c[0] = changeVersion
		fp := a.KeyFingerprint()
		copy(c[17:], fp[:])
		return appendRecord(c, 0, o)
	}
	kps, err := a.keyedPseudonyms(person(2))
	require.NoError(t, err)
	forget := &op{kind: opForget, at: t0, people: [][]anonymize.KeyedPseudonym{kps}}
	rows := map[string][]byte{}
	// A well-formed change that the API would refuse, sealed by someone
	// who holds the key (a buggy or old writer): a purpose named "a 0"
	// with consent model 48.
	rows["invalid change"] = a.sealChange(uint64(len(j.log))+1, envelope(&op{kind: opDefinePurpose, at: t0, purpose: Purpose{Name: "a 0", Model: 48}}))
	j.put(rows["invalid change"])
	// Rows written straight into the table, without the key.
	forged := envelope(forget)
	rows["forged tag"] = append(forged, make([]byte, changeTagLen)...)
	j.put(rows["forged tag"])
	valid := a.sealChange(99, envelope(forget)) // a valid tag for another position
	rows["moved"] = valid
	j.put(valid)
	rows["undecodable"] = []byte("not a change at all")
	j.put(rows["undecodable"])
	rows["unauthenticated v1"] = append(make([]byte, 16), appendRecord(nil, 0, forget)...)
	j.put(rows["unauthenticated v1"])
	rows["rotation to an unknown key, forged"] = append(envelope(&op{kind: opRotateKey, at: t0, key: anonymize.Fingerprint{1}, grace: time.Hour}), make([]byte, changeTagLen)...)
	j.put(rows["rotation to an unknown key, forged"])
	for _, e := range []*Engine{a, b} {
		require.NoError(t, j.deliver(e))
		assert.Equal(t, want, stateDump(t, e), "no refused row changed anything")
		assert.Equal(t, uint64(len(rows)), e.ReplicaStatus().Refused)
		assert.Equal(t, uint64(len(rows)), e.Stats().RefusedChanges)
		assert.NoError(t, e.ReplicaStatus().Stalled)
	}
	// Later writes reach every replica.
	require.NoError(t, j.write(t, a, func() error { return a.Add("runners", person(8)) }))
	require.NoError(t, j.deliver(b))
	assert.Equal(t, stateDump(t, a), stateDump(t, b))
	// Snapshots still load, and a forged snapshot tag is refused.
	var buf bytes.Buffer
	seq, _, err := a.WriteReplicaSnapshot(&buf)
	require.NoError(t, err)
	c := newReplicaT(t, j)
	tag := a.SnapshotTag(seq, buf.Bytes())
	bad := bytes.Clone(tag)
	bad[len(bad)-1] ^= 1
	require.ErrorIs(t, c.LoadReplicaSnapshot(seq, buf.Bytes(), bad), ErrInvalidChange)
	require.ErrorIs(t, c.LoadReplicaSnapshot(seq+1, buf.Bytes(), tag), ErrInvalidChange, "a tag binds its position")
	require.NoError(t, c.LoadReplicaSnapshot(seq, buf.Bytes(), tag))
	assert.Equal(t, stateDump(t, a), stateDump(t, c))
}

// goldenOps are the writes behind testdata/journal-v2-*.hex: the rows
// that the release before this one (framed records) and the development
// builds after it (bare encodings) wrote for them, with testKeyHex.
func goldenOps(t *testing.T, j *manualJournal, a *Engine) {
	for _, fn := range []func() error{
		func() error { return a.DefinePurpose(Purpose{Name: "ads", Model: OptOut, Description: "d"}) },
		func() error { return a.DefinePurpose(Purpose{Name: "email", Model: OptIn}) },
		func() error { return a.Define(Segment{Name: "runners", Purpose: "ads"}) },
		func() error { return a.Define(Segment{Name: "news", Purpose: "email", Sensitive: true}) },
		func() error { return a.Add("runners", person(1), person(2), person(3), person(4)) },
		func() error { return a.Add("news", person(1), person(2)) },
		func() error { return a.SetConsent(person(1), "email", true) },
		func() error { return a.Suppress(person(3)) },
		func() error { return a.Remove("runners", person(4)) },
		func() error { _, err := a.Forget(person(2)); return err },
	} {
		require.NoError(t, j.write(t, a, fn))
	}
}

// A fleet's journal written by earlier builds applies after an upgrade,
// row for row, to the state this build's own rows give; what this build
// writes, the previous release reads (the same format: checked against its
// rows byte for byte after the origin, counter and tag, which differ per
// replica). A framed row with bytes after its record is refused.
func TestJournalGoldenRows(t *testing.T) {
	j := &manualJournal{}
	a := newReplicaT(t, j)
	goldenOps(t, j, a)
	want := stateDump(t, a)
	for _, file := range []string{"journal-v2-framed.hex", "journal-v2-bare.hex"} {
		b, err := os.ReadFile(filepath.Join("testdata", file))
		require.NoError(t, err)
		old := &manualJournal{}
		for _, l := range strings.Fields(string(b)) {
			c, err := hex.DecodeString(l)
			require.NoError(t, err)
			old.put(c)
		}
		r := newReplicaT(t, old)
		require.NoError(t, old.deliver(r), file)
		assert.Equal(t, uint64(len(old.log)), r.Applied(), file)
		assert.Zero(t, r.ReplicaStatus().Refused, file)
		assert.Equal(t, want, stateDump(t, r), file)
		if file == "journal-v2-framed.hex" {
			require.Len(t, j.log, len(old.log))
			for i := range j.log {
				mine, theirs := j.log[i], old.log[i]
				assert.Equal(t, theirs[:1], mine[:1], "row %d: version", i+1)
				assert.Equal(t, theirs[17:len(theirs)-changeTagLen], mine[17:len(mine)-changeTagLen], "row %d: key and change", i+1)
			}
		}
	}

	fp := a.KeyFingerprint()
	kps, err := a.keyedPseudonyms(person(5))
	require.NoError(t, err)
	c := make([]byte, changeHeaderLen)
	c[0] = changeVersion
	copy(c[17:], fp[:])
	c = append(appendRecord(c, 0, &op{kind: opAdd, at: t0, name: "runners", people: [][]anonymize.KeyedPseudonym{kps}}), 0)
	j.put(a.sealChange(uint64(len(j.log))+1, c))
	require.NoError(t, j.deliver(a))
	assert.False(t, a.In(kps[0].Pseudonym, "runners"), "a row with bytes after its record is refused")
	assert.Equal(t, uint64(1), a.ReplicaStatus().Refused)
}

// Changes replayed from the log pass the API's checks too: a record that
// decodes but that the API would refuse is skipped with an audit event.
func TestReplayRefusesInvalidRecords(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	want := stateDump(t, e)
	logPath := e.store.log.Name()
	seq := e.store.seq + 1
	require.NoError(t, e.Close())
	buf := wal.StartFrame(nil)
	buf = appendRecord(buf, seq, &op{kind: opDefinePurpose, at: t0, purpose: Purpose{Name: "a 0", Model: 48}})
	buf = wal.EndFrame(buf, 0)
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.Write(buf)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	e = d.open(t)
	defer e.Close()
	assert.Equal(t, want, stateDump(t, e))
	assert.Equal(t, uint64(1), e.Stats().RefusedChanges)
	assert.Contains(t, d.audit.String(), "personify.change_refused")
	var buf2 bytes.Buffer
	_, err = e.WriteSnapshot(&buf2)
	require.NoError(t, err)
	require.NoError(t, e.LoadSnapshot(&buf2))
}

// A missing log is corruption, named, never an empty history.
func TestMissingLogIsAnError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compact bool
	}{{"active log", false}, {"the log after the newest snapshot", true}} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDurableEnv(t)
			e := d.open(t)
			require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
			if tc.compact {
				require.NoError(t, e.Compact())
			}
			require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
			name := filepath.Base(e.store.log.Name())
			require.NoError(t, e.Close())
			require.NoError(t, os.Remove(filepath.Join(d.dir, name)))
			_, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
			require.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), name)
		})
	}
}

// fmt's reflection over a struct holding keys (exported or unexported
// fields, by value or pointer, two deep) prints no key material, whatever
// the verb.
func TestKeysNeverPrint(t *testing.T) {
	key := mustKey(t, testKeyHex)
	_, priv, _ := ed25519.GenerateKey(nil)
	rk, err := NewReceiptKey(priv)
	require.NoError(t, err)
	e, err := New(Options{Key: key})
	require.NoError(t, err)
	defer e.Close()
	derived, err := deriveReceiptKey(key)
	require.NoError(t, err)
	opts := Options{Key: key, ReceiptKey: rk, PreviousKeys: []PreviousKey{{Key: key, Until: t0}}, UpcomingKeys: []anonymize.Key{key}}
	type inner struct {
		o  Options
		rk ReceiptKey
		e  *Engine
	}
	type holder struct {
		O   Options
		RK  ReceiptKey
		o   Options
		rk  ReceiptKey
		pk  PreviousKey
		e   *Engine
		in  inner
		pin *inner
	}
	h := holder{O: opts, RK: rk, o: opts, rk: rk, pk: PreviousKey{Key: key}, e: e, in: inner{opts, rk, e}, pin: &inner{opts, rk, e}}
	forbidden := []string{testKeyHex[:16], hex.EncodeToString(priv[:8]), hex.EncodeToString(priv.Seed()[:8]),
		hex.EncodeToString((*derived.r.priv)[:8])}
	decimal := func(b []byte) string { // how fmt prints a byte slice with %v
		parts := make([]string, 8)
		for i := range parts {
			parts[i] = fmt.Sprint(b[i])
		}
		return strings.Join(parts, " ")
	}
	keyBytes := key.Bytes()
	forbidden = append(forbidden, decimal(keyBytes), decimal(priv), decimal(*derived.r.priv), fmt.Sprintf("%q", keyBytes[:8])[1:17],
		fmt.Sprintf("%q", []byte(priv[:8]))[1:10])
	for _, v := range []any{h, &h, opts, &opts, rk, &rk, []Options{opts}, map[string]ReceiptKey{"k": rk}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
			out := fmt.Sprintf(verb, v)
			for _, f := range forbidden {
				require.NotContains(t, strings.ToLower(out), strings.ToLower(f), "verb %s printed key material", verb)
			}
		}
		js, _ := json.Marshal(v)
		for _, f := range forbidden {
			require.NotContains(t, strings.ToLower(string(js)), strings.ToLower(f))
		}
	}
}

// An engine owns its copy of the key: another engine's grace period
// ending (which destroys that engine's copy) does not stop this one, and
// the caller's key keeps working.
func TestEnginesDoNotShareKeyMaterial(t *testing.T) {
	old, next := anonymize.GenerateKey(), anonymize.GenerateKey()
	clock := &fakeClock{t: t0}
	a, err := New(Options{Key: old, Now: clock.Now})
	require.NoError(t, err)
	b, err := New(Options{Key: old, Now: clock.Now})
	require.NoError(t, err)
	want, err := b.Pseudonym(person(1))
	require.NoError(t, err)
	require.NoError(t, a.RotateKey(next, time.Hour))
	clock.Advance(2 * time.Hour)
	_, err = a.Expire(clock.Now()) // a destroys its copy of old
	require.NoError(t, err)
	got, err := b.Pseudonym(person(1))
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.False(t, old.IsZero(), "the caller's key is the caller's")
	h, err := anonymize.SipHash(old).Pseudonym(person(1))
	require.NoError(t, err)
	assert.Equal(t, want, h)
}

// A broken clock (a zero time.Time, a date before 1970 or after 2261) is
// refused at the API, so nothing unstorable is ever logged.
func TestTimesOutOfRangeAreRefused(t *testing.T) {
	for _, bad := range []time.Time{{}, time.Date(1800, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC), time.Date(2262, 6, 1, 0, 0, 0, 0, time.UTC)} {
		t.Run(bad.Format("2006"), func(t *testing.T) {
			d := newDurableEnv(t)
			clock := &fakeClock{t: t0}
			o := d.opts
			o.Now = clock.Now
			e, err := Open(d.dir, durable(o, DurableOptions{MaintenanceInterval: -1}))
			require.NoError(t, err)
			require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
			require.NoError(t, e.Define(Segment{Name: "recent", Purpose: "ads", Retention: time.Hour}))
			clock.t = bad
			for name, err := range map[string]error{
				"add":     e.Add("recent", person(1)),
				"define":  e.Define(Segment{Name: "x", Purpose: "ads", Retention: time.Hour}),
				"consent": e.SetConsent(person(1), "ads", false),
				"expire":  func() error { _, err := e.Expire(bad); return err }(),
				"forget":  func() error { _, err := e.Forget(person(1)); return err }(),
			} {
				require.ErrorIs(t, err, ErrInvalidTime, name)
				assert.Contains(t, err.Error(), "Options.Now", name)
			}
			clock.t = t0
			require.NoError(t, e.Compact())
			require.NoError(t, e.Close())
			e, err = Open(d.dir, durable(o, DurableOptions{MaintenanceInterval: -1}))
			require.NoError(t, err, "the snapshot loads")
			require.NoError(t, e.Close())
		})
	}
	_, err := New(Options{Key: anonymize.GenerateKey(), PreviousKeys: []PreviousKey{{Key: anonymize.GenerateKey(), Until: time.Date(1800, 1, 1, 0, 0, 0, 0, time.UTC)}}})
	require.ErrorIs(t, err, ErrInvalidTime)
	te := newTestEngine(t)
	require.ErrorIs(t, te.RotateKey(anonymize.GenerateKey(), 200*365*24*time.Hour), ErrInvalidDefinition)
	require.ErrorIs(t, te.Define(Segment{Name: "x", Purpose: "ads", Retention: 101 * 365 * 24 * time.Hour}), ErrInvalidDefinition)
}

// Descriptions must be valid UTF-8 (a snapshot would otherwise rewrite them).
func TestDescriptionsMustBeUTF8(t *testing.T) {
	te := newTestEngine(t)
	require.ErrorIs(t, te.Define(Segment{Name: "x", Purpose: "ads", Description: "caf\xe9"}), ErrInvalidDefinition)
	require.ErrorIs(t, te.DefinePurpose(Purpose{Name: "p", Model: OptIn, Description: "\xff"}), ErrInvalidDefinition)
	require.NoError(t, te.Define(Segment{Name: "x", Purpose: "ads", Description: "café ☕"}))
}

// A record has one encoding: an over-long varint is refused.
func TestOverlongVarintRefused(t *testing.T) {
	o := &op{kind: opDrop, at: t0, name: "s"}
	good := appendRecord(nil, 1, o)
	body := good[wal.RecHeaderLen:]
	// seq (8), kind (1), at (8), then the name's length 1 as the
	// canonical 0x01; rewrite it as the two-byte 0x81 0x00.
	require.Equal(t, byte(1), body[17])
	long := append(append(append([]byte{}, body[:17]...), 0x81, 0x00), body[18:]...)
	_, _, _, err := decodeRecord(frame(long))
	require.ErrorIs(t, err, errRecord)
	assert.Contains(t, err.Error(), "varint")
	_, _, _, err = decodeRecord(good)
	require.NoError(t, err)
}

// Close's doc and behaviour agree.
func TestClosedEngineReportsNothing(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.add("runners", people(0, 5)...)
	require.NoError(t, te.Close())
	_, err := te.Len("runners")
	require.ErrorIs(t, err, ErrClosed)
	assert.Equal(t, Stats{}, te.Stats())
	assert.Empty(t, te.Definitions())
	assert.Empty(t, te.Purposes())
}

// A receipt's RequestID cannot carry personal data.
func TestRequestIDIsLimited(t *testing.T) {
	te := newTestEngine(t)
	for _, bad := range []string{"jane@example.com", "+15551234567", "15551234567", "Jane Doe", strings.Repeat("a", 65), "ü"} {
		_, err := te.ForgetWith(person(1), ForgetOptions{RequestID: bad})
		require.Error(t, err, bad)
		assert.NotContains(t, err.Error(), bad)
	}
	for _, good := range []string{"", "ticket-4711", "DSAR/2026/0042", "123456", "case:42"} {
		r, err := te.ForgetWith(person(1), ForgetOptions{RequestID: good})
		require.NoError(t, err, good)
		assert.Equal(t, good, r.RequestID)
	}
}

// A bulk write with one bad identifier names its index, never its text,
// and adds nothing.
func TestBulkErrorNamesTheIndex(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	ids := people(0, 10000)
	ids[4711] = anonymize.Email("not-an-email-SECRET")
	err := te.Add("runners", ids...)
	require.ErrorIs(t, err, anonymize.ErrInvalidIdentifier)
	assert.Contains(t, err.Error(), "identifier 4711 of 10000")
	assert.NotContains(t, err.Error(), "SECRET")
	n, err := te.Len("runners")
	require.NoError(t, err)
	assert.Zero(t, n)
}

var _ = errors.Is
