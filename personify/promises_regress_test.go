package personify

// Regression tests for the faults a hostile review of the promises found;
// each failed before its fix.

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/fleet"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/personify-go/personify/personify/internal/wal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A snapshot written after an erasure holds nothing of the person: not the
// pseudonym, and not their entry in a tombstone slot (ordinal, segment
// ids) nor their replaced overflow record.
func TestSnapshotHoldsNothingOfTheErased(t *testing.T) {
	d := newDurableEnv(t)
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, err)
	defer e.Close()
	require.NoError(t, e.DefinePurpose(Purpose{Name: "health", Model: OptOut}))
	names := []string{"runners", "diabetes"}
	for i := range 30 {
		names = append(names, "s"+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	for _, n := range names {
		require.NoError(t, e.Define(Segment{Name: n, Purpose: "health"}))
	}
	require.NoError(t, e.Add("runners", people(0, 30)...))
	alice, bob := person(7), person(8)
	for _, n := range names[1:] { // bob: an overflow record of 31 segments
		require.NoError(t, e.Add(n, bob))
	}
	require.NoError(t, e.Add("diabetes", alice)) // alice: inline lanes
	require.NoError(t, e.Remove("s"+"aa", bob))  // bob's first record becomes garbage
	pa, pb := e.mustPseudonym(t, alice), e.mustPseudonym(t, bob)
	ids := func(p anonymize.Pseudonym) []uint32 {
		e.mu.RLock()
		defer e.mu.RUnlock()
		en, ok := e.dir.Get(p)
		require.True(t, ok)
		_, ids := e.dir.Tab.Load().DecodeEntry(nil, en)
		return ids
	}
	bobIDs := ids(pb)
	require.Greater(t, len(bobIDs), 16, "bob overflows")
	ra, err := e.Forget(alice)
	require.NoError(t, err)
	rb, err := e.Forget(bob)
	require.NoError(t, err)
	require.NoError(t, e.Compact())
	require.True(t, e.Purged(ra))
	require.True(t, e.Purged(rb))
	for _, p := range []anonymize.Pseudonym{pa, pb} {
		assert.False(t, dirHoldsAny(t, d.dir, pseudonymBytes(p)))
	}
	// No tombstone keeps an entry, and bob's records (live then replaced)
	// are not in the arena.
	f, err := os.Open(snapFile(t, d.dir))
	require.NoError(t, err)
	defer f.Close()
	st, err := readState(f, "snap", e.keySet(), nil)
	require.NoError(t, err)
	tab := st.dir.Tab.Load()
	for i, s := range tab.Slots {
		if s.Key == index.SlotTombstone {
			assert.Equal(t, index.EmptyEntry(0), index.Entry{Meta: s.Meta &^ index.SeqMask, Lo: s.Lo, Hi: s.Hi}, "tombstone slot %d keeps an entry", i)
		}
	}
	snap, err := os.ReadFile(snapFile(t, d.dir))
	require.NoError(t, err)
	for _, state := range []uint32{0, 1, 2} {
		rec := index.EncodeRecord(nil, state, bobIDs)
		assert.False(t, bytes.Contains(snap, rec), "bob's overflow record (state %d) is in the snapshot", state)
	}
}

// DoNotReAdd holds across a key rotation: by identifier (the list gains
// the new pseudonym), and by pseudonym under the new key.
func TestDoNotReAddSurvivesRotation(t *testing.T) {
	next := anonymize.GenerateKey()
	te := newTestEngine(t, func(o *Options) { o.UpcomingKeys = []anonymize.Key{next} })
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.add("runners", person(1), person(2))
	_, err := te.ForgetWith(person(1), ForgetOptions{DoNotReAdd: true})
	require.NoError(t, err)
	require.NoError(t, te.RotateKey(next, time.Hour))
	require.NoError(t, te.Add("runners", person(1)))
	p := te.pseudonym(person(1))
	assert.False(t, te.In(p, "runners"), "re-added by identifier after the rotation")
	// A bulk load computed under the new key (the upcoming key was known
	// at the erasure).
	newP, err := anonymize.SipHash(next).Pseudonym(person(1))
	require.NoError(t, err)
	require.NoError(t, te.AddPseudonyms("runners", []anonymize.Pseudonym{newP}))
	assert.False(t, te.In(newP, "runners"), "re-added by pseudonym under the new key")
	// After the grace period the old key is gone; the list still holds
	// the person under the new one.
	te.clock.Advance(2 * time.Hour)
	_, err = te.Expire(te.clock.Now())
	require.NoError(t, err)
	require.NoError(t, te.Add("runners", person(1)))
	assert.False(t, te.In(te.pseudonym(person(1)), "runners"), "re-added after the old key was destroyed")
	rep, err := te.Explain(person(1))
	require.NoError(t, err)
	assert.True(t, rep.DoNotReAdd)

	// A key unknown at the erasure: the person is carried over when next
	// written by identifier during the grace period.
	te2 := newTestEngine(t)
	te2.define(Segment{Name: "runners", Purpose: "ads"})
	te2.add("runners", person(1))
	_, err = te2.ForgetWith(person(1), ForgetOptions{DoNotReAdd: true})
	require.NoError(t, err)
	other := anonymize.GenerateKey()
	require.NoError(t, te2.RotateKey(other, time.Hour))
	require.NoError(t, te2.Add("runners", person(1))) // skipped, and listed under the new key
	te2.clock.Advance(2 * time.Hour)
	_, err = te2.Expire(te2.clock.Now())
	require.NoError(t, err)
	require.NoError(t, te2.Add("runners", person(1)))
	assert.False(t, te2.In(te2.pseudonym(person(1)), "runners"))
}

// A replica that loads the fleet's snapshot takes the fleet's keyring
// (keys and grace periods): replicas with different Options agree on
// every change, and one without a previous key refuses writes and
// erasures by identifier instead of issuing a receipt that misses people.
func TestReplicasAdoptTheSnapshotsKeyring(t *testing.T) {
	next := anonymize.GenerateKey()
	j := &manualJournal{}
	a := newReplicaT(t, j, func(o *Options) { o.UpcomingKeys = []anonymize.Key{next} })
	require.NoError(t, j.write(t, a, func() error { return a.DefinePurpose(Purpose{Name: "ads", Model: OptOut}) }))
	require.NoError(t, j.write(t, a, func() error { return a.Define(Segment{Name: "runners", Purpose: "ads"}) }))
	require.NoError(t, j.write(t, a, func() error { return a.Add("runners", people(0, 5)...) }))
	require.NoError(t, j.write(t, a, func() error { return a.RotateKey(next, 24*time.Hour) }))
	var buf bytes.Buffer
	seq, _, err := a.WriteReplicaSnapshot(&buf)
	require.NoError(t, err)
	tag := a.SnapshotTag(seq, buf.Bytes())

	// c: restarted with the new key and a guessed grace for the old one.
	c := newReplicaT(t, j, func(o *Options) {
		o.Key = next
		o.PreviousKeys = []PreviousKey{{Key: mustKey(t, testKeyHex), Until: t0.Add(time.Hour)}}
	})
	require.NoError(t, c.LoadReplicaSnapshot(seq, buf.Bytes(), tag))
	require.NoError(t, j.deliver(c))
	assert.Equal(t, stateDump(t, a), stateDump(t, c), "the snapshot's keyring, grace periods included")
	require.NoError(t, j.write(t, a, func() error { _, err := a.Expire(t0.Add(2 * time.Hour)); return err }))
	require.NoError(t, j.deliver(c))
	assert.Equal(t, a.Stats().People, c.Stats().People)
	assert.Equal(t, stateDump(t, a), stateDump(t, c))

	// b: not given the old key at all.
	b := newReplicaT(t, j, func(o *Options) { o.Key = next })
	require.NoError(t, b.LoadReplicaSnapshot(seq, buf.Bytes(), tag))
	require.NoError(t, j.deliver(b))
	assert.Equal(t, stateDump(t, a), stateDump(t, b), "same state: the keyring names the key b lacks")
	r, err := b.Forget(person(2))
	require.ErrorIs(t, err, ErrKeyUnavailable)
	assert.Empty(t, r.Signature)
	require.ErrorIs(t, b.Add("runners", person(9)), ErrKeyUnavailable)
	_, err = b.Explain(person(2))
	require.ErrorIs(t, err, ErrKeyUnavailable)
	// Lookups still work under the key it has.
	require.NoError(t, j.write(t, a, func() error { return a.Add("runners", person(7)) }))
	require.NoError(t, j.deliver(b))
	p, err := b.Pseudonym(person(7))
	require.NoError(t, err)
	assert.True(t, b.In(p, "runners"))
	// Once the old key's grace ends (in the journal), b is whole again.
	require.NoError(t, j.write(t, a, func() error { _, err := a.Expire(t0.Add(25 * time.Hour)); return err }))
	require.NoError(t, j.deliver(b))
	require.NoError(t, j.deliver(c))
	require.NoError(t, j.write(t, b, func() error { _, err := b.Forget(person(2)); return err }))
	require.NoError(t, j.deliver(a))
	assert.Equal(t, stateDump(t, a), stateDump(t, b))
}

// renameFailFS fails renames of snapshots into place while failSnapRename
// is set, and the failSyncAt-th directory sync.
type renameFailFS struct {
	wal.OS
	failSnapRename bool
	syncCalls      int
	failSyncAt     int
}

func (f *renameFailFS) Rename(o, n string) error {
	if f.failSnapRename && strings.HasSuffix(n, ".pfy") {
		return errors.New("rename: input/output error")
	}
	return f.OS.Rename(o, n)
}

func (f *renameFailFS) SyncDir(name string) error {
	f.syncCalls++
	if f.syncCalls == f.failSyncAt {
		return errors.New("syncdir: input/output error")
	}
	return f.OS.SyncDir(name)
}

// A compaction whose snapshot rename fails, and whose clean-up sync fails
// too, never sends appends to a log whose name is gone.
func TestCompactRenameFailureKeepsWrites(t *testing.T) {
	d := newDurableEnv(t)
	fs := &renameFailFS{}
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1, fs: fs}))
	require.NoError(t, err)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	fs.failSnapRename, fs.syncCalls, fs.failSyncAt = true, 0, 2 // 1: the new log's sync; 2: after removing it again
	require.Error(t, e.Compact())
	fs.failSnapRename, fs.failSyncAt = false, 0
	require.NoError(t, e.Add("runners", people(0, 10)...))
	want := stateDump(t, e)
	require.NoError(t, e.Close())
	e = d.open(t)
	defer e.Close()
	assert.Equal(t, want, stateDump(t, e), "acknowledged writes survive")
}

// A change by identifier computed before a rotation it had not seen (a
// Suppress racing RotateKey) is refused: it would otherwise make a second
// entry for the person and never reach the one that is served.
func TestStaleWriteAfterRotationIsRefused(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	te.add("runners", people(0, 5)...)
	stale, err := te.keyedPseudonyms(person(9))
	require.NoError(t, err)
	require.NoError(t, te.RotateKey(anonymize.GenerateKey(), time.Hour))
	te.add("runners", person(9))
	people := te.Stats().People
	for name, o := range map[string]*op{
		"suppress": {kind: opSuppress, at: te.now(), flag: true, people: [][]anonymize.KeyedPseudonym{stale}},
		"consent":  {kind: opConsent, at: te.now(), name: "ads", people: [][]anonymize.KeyedPseudonym{stale}},
		"add":      {kind: opAdd, at: te.now(), name: "runners", people: [][]anonymize.KeyedPseudonym{stale}},
		"remove":   {kind: opRemove, at: te.now(), name: "runners", people: [][]anonymize.KeyedPseudonym{stale}},
		"forget":   {kind: opForget, at: te.now(), people: [][]anonymize.KeyedPseudonym{stale}},
	} {
		_, err := te.commit(t.Context(), o)
		require.ErrorIs(t, err, ErrKeyChanged, name)
	}
	assert.Equal(t, people, te.Stats().People, "no second entry")
	assert.Equal(t, []string{"runners"}, te.segs(person(9), "ads"))
}

// When a key's grace period ends, the files written under it are
// compacted away: a restart no longer needs the destroyed key, and no
// file holds what was shredded.
func TestShreddingCompacts(t *testing.T) {
	d := newDurableEnv(t)
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: time.Hour}))
	require.NoError(t, err)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", people(0, 5)...))
	p := e.mustPseudonym(t, person(1))
	next := anonymize.GenerateKey()
	require.NoError(t, e.RotateKey(next, time.Hour))
	d.clock.Advance(2 * time.Hour)
	_, err = e.Expire(d.clock.Now())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !dirHoldsAny(t, d.dir, pseudonymBytes(p)) }, 5*time.Second, 5*time.Millisecond,
		"the shredded pseudonyms leave the files")
	require.NoError(t, e.Close())
	o := d.opts
	o.Key = next // the old key destroyed everywhere
	e, err = Open(d.dir, durable(o, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, err)
	require.NoError(t, e.Close())
}

// Close wakes a replica's writers waiting for their changes, instead of
// leaving them until WriteTimeout.
func TestCloseWakesReplicaWriters(t *testing.T) {
	j := &manualJournal{}
	e, err := NewReplica(Options{Key: mustKey(t, testKeyHex), K: 1}, j, ReplicaOptions{WriteTimeout: time.Minute})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}) }()
	require.Eventually(t, func() bool { j.mu.Lock(); defer j.mu.Unlock(); return len(j.log) == 1 }, 5*time.Second, time.Millisecond)
	start := time.Now()
	require.NoError(t, e.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrClosed)
		require.ErrorIs(t, err, fleet.ErrNotApplied, "its outcome is the journal's")
		assert.Less(t, time.Since(start), 5*time.Second)
	case <-time.After(10 * time.Second):
		t.Fatal("the writer is still waiting")
	}
}

// Purged answers only for receipts this engine signed: an altered one
// (its Seq zeroed) or one from elsewhere is never reported purged.
func TestPurgedVerifiesTheReceipt(t *testing.T) {
	d := newDurableEnv(t)
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1, PurgeWithin: time.Hour}))
	require.NoError(t, err)
	defer e.Close()
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, e.Add("runners", people(0, 5)...))
	r, err := e.Forget(person(1))
	require.NoError(t, err)
	assert.False(t, e.Purged(r))
	forged := r
	forged.Seq = 0
	assert.False(t, e.Purged(forged))
	assert.False(t, e.Purged(Receipt{}))
	require.NoError(t, e.Compact())
	assert.True(t, e.Purged(r))
	assert.False(t, e.Purged(forged))
	_, err = Open(t.TempDir(), durable(d.opts, DurableOptions{PurgeWithin: 365 * 24 * time.Hour}))
	require.ErrorIs(t, err, ErrInvalidDefinition, "a deadline over 30 days is refused")
}

// The receipt keys list is oldest first after a reopen, too.
func TestReceiptKeysOldestFirst(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	first := e.ReceiptPublicKey()
	next := anonymize.GenerateKey()
	require.NoError(t, e.RotateKey(next, time.Hour))
	require.NoError(t, e.Compact())
	require.NoError(t, e.Close())
	o := d.opts
	o.Key = next
	o.PreviousKeys = []PreviousKey{{Key: mustKey(t, testKeyHex), Until: t0.Add(time.Hour)}}
	e, err := Open(d.dir, durable(o, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, err)
	defer e.Close()
	keys := e.ReceiptPublicKeys()
	require.Len(t, keys, 2)
	assert.Equal(t, first, keys[1])
	h := e.receipt.history()
	assert.Equal(t, first, h[0], "history oldest first")
}
