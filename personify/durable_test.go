package personify

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/personify-go/personify/personify/internal/wal"
	"github.com/personify-go/personify/segment"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stateDump describes everything an engine stores, by pseudonym (ordinals
// are internal and may differ between two engines holding the same data),
// so that two engines can be compared.
func stateDump(t testing.TB, e *Engine) string {
	t.Helper()
	e.mu.RLock()
	defer e.mu.RUnlock()
	byOrd := map[uint32]anonymize.Pseudonym{}
	e.dir.Tab.Load().Each(func(p anonymize.Pseudonym, en index.Entry) {
		if e.firstSlotLocked(p, en.Ord()) {
			byOrd[en.Ord()] = p
		}
	})
	names := func(s *segment.Set) string {
		var out []string
		for o := range s.All() {
			p, ok := byOrd[o]
			require.True(t, ok, "ordinal %d has no directory entry", o)
			out = append(out, p.String())
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	var b strings.Builder
	for _, k := range e.ringKeys() {
		fmt.Fprintf(&b, "key %s current=%t until=%s\n", k.Fingerprint, k.Current, k.Until.UTC().Format(time.RFC3339Nano))
	}
	for _, ps := range e.purposeByBit {
		fmt.Fprintf(&b, "purpose %s %v %q granted[%s] denied[%s] suppressed[%s]\n", ps.Name, ps.Model, ps.Description,
			names(ps.granted), names(ps.denied), names(ps.suppressed))
	}
	segNames := make([]string, 0, len(e.segs))
	for n := range e.segs {
		segNames = append(segNames, n)
	}
	sort.Strings(segNames)
	for _, n := range segNames {
		st := e.segs[n]
		fmt.Fprintf(&b, "segment %+v\n", st.Segment)
		var ms []string
		for o := range st.members().All() {
			at, _ := st.addedAt(o)
			ms = append(ms, byOrd[o].String()+"@"+at.UTC().Format(time.RFC3339))
		}
		sort.Strings(ms)
		fmt.Fprintf(&b, "  members %s\n", strings.Join(ms, ","))
		// The index must agree with the sets.
		for o := range st.members().All() {
			require.True(t, e.inIndexLocked(byOrd[o], st.id), "index lost %s in %s", byOrd[o], n)
		}
	}
	fmt.Fprintf(&b, "suppressed-all [%s]\n", names(e.suppressedAll))
	var dn []string
	for p, k := range e.doNotReAdd {
		dn = append(dn, p.String()+"/"+k.String())
	}
	sort.Strings(dn)
	fmt.Fprintf(&b, "do-not-re-add %v\n", dn)
	var al []string
	for p, a := range e.aliases {
		al = append(al, fmt.Sprintf("%s->%s/%s", p, a.primary, a.key))
	}
	sort.Strings(al)
	fmt.Fprintf(&b, "aliases %v\npeople %d\n", al, e.dir.Len())
	b.WriteString(linksDump(t, e, byOrd))
	b.WriteString(capsDump(e, byOrd))
	// The by-ordinal index of aliases is derived from them.
	of := indexAliases(e.aliases)
	require.Len(t, e.aliasesOf, len(of), "aliasesOf")
	for ord, qs := range of {
		require.ElementsMatch(t, qs, e.aliasesOf[ord], "aliasesOf[%d]", ord)
	}
	return b.String()
}

// inIndexLocked reports whether the lookup index lists segment id for p.
func (e *Engine) inIndexLocked(p anonymize.Pseudonym, id uint32) bool {
	t := e.dir.Tab.Load()
	en, ok := t.Get(p)
	if !ok {
		return false
	}
	_, ids := t.DecodeEntry(nil, en)
	return slices.Contains(ids, id)
}

type durableEnv struct {
	dir   string
	clock *fakeClock
	opts  Options
	audit *bytes.Buffer
}

// durable returns o with durable settings d.
func durable(o Options, d DurableOptions) Options {
	o.Durable = d
	return o
}

func newDurableEnv(t *testing.T) *durableEnv {
	clock := &fakeClock{t: t0}
	var audit bytes.Buffer
	return &durableEnv{dir: t.TempDir(), clock: clock, audit: &audit,
		opts: Options{Key: mustKey(t, testKeyHex), K: 3, Now: clock.Now, Audit: slog.New(slog.NewJSONHandler(&audit, nil))}}
}

func (d *durableEnv) open(t *testing.T) *Engine {
	t.Helper()
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, err)
	return e
}

// workload applies a deterministic mix of every kind of change to e.
func workload(t *testing.T, e *Engine, clock *fakeClock, rounds int) {
	t.Helper()
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut, Description: "ads"}))
	require.NoError(t, e.DefinePurpose(Purpose{Name: "email", Model: OptIn}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads", Description: "run"}))
	require.NoError(t, e.Define(Segment{Name: "recent", Purpose: "ads", Retention: 48 * time.Hour}))
	require.NoError(t, e.Define(Segment{Name: "news", Purpose: "email", Sensitive: true}))
	r := rand.New(rand.NewPCG(1, 2))
	for i := range rounds {
		clock.Advance(time.Hour)
		switch r.IntN(12) {
		case 0, 1, 2:
			require.NoError(t, e.Add([]string{"runners", "recent", "news"}[r.IntN(3)], people(i, i+5+r.IntN(20))...))
		case 3:
			ps := make([]anonymize.Pseudonym, 50)
			for j := range ps {
				ps[j] = anonymize.Pseudonym(r.Uint64())
			}
			require.NoError(t, e.AddPseudonyms("runners", ps))
		case 4:
			require.NoError(t, e.Remove("runners", person(r.IntN(i+1))))
		case 5:
			require.NoError(t, e.SetConsent(person(r.IntN(i+1)), []string{"ads", "email"}[r.IntN(2)], r.IntN(2) == 0))
		case 6:
			require.NoError(t, e.Suppress(person(r.IntN(i+1)), "email"))
		case 7:
			_, err := e.ForgetWith(person(r.IntN(i+1)), ForgetOptions{DoNotReAdd: r.IntN(2) == 0})
			require.NoError(t, err)
		case 8:
			_, err := e.Expire(clock.Now())
			require.NoError(t, err)
		case 9:
			require.NoError(t, e.Unsuppress(person(r.IntN(i+1))))
		case 10: // devices move between people, people merge
			err := e.Link(person(r.IntN(i+1)), device(r.IntN(15)), userID(r.IntN(40)))
			if !errors.Is(err, ErrTooManyLinked) && !errors.Is(err, ErrDoNotReAdd) {
				require.NoError(t, err)
			}
		case 11:
			if err := e.Unlink(device(r.IntN(15))); !errors.Is(err, ErrNotLinked) {
				require.NoError(t, err)
			}
		}
	}
}

func TestOpenReplaysEverything(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	workload(t, e, d.clock, 300)
	want := stateDump(t, e)

	// The same changes in memory give the same state.
	mc := &fakeClock{t: t0}
	m, err := New(Options{Key: d.opts.Key, K: 3, Now: mc.Now})
	require.NoError(t, err)
	workload(t, m, mc, 300)
	require.Equal(t, want, stateDump(t, m))

	require.NoError(t, e.Close())
	e = d.open(t) // from the first snapshot and the whole log
	require.Equal(t, want, stateDump(t, e))
	require.NoError(t, e.Compact())
	require.NoError(t, e.Close())
	e = d.open(t) // from the compacted snapshot alone
	assert.Equal(t, want, stateDump(t, e))
	assert.Equal(t, m.Segments(nil, m.mustPseudonym(t, person(7)), "ads"), e.Segments(nil, e.mustPseudonym(t, person(7)), "ads"))
	workload(t, e, d.clock, 50) // and it goes on working
	require.NoError(t, e.Close())
	files, err := os.ReadDir(d.dir)
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, f.Name())
	}
	assert.Len(t, names, 3, "one snapshot, one log and the lock: %v", names)
}

func (e *Engine) mustPseudonym(t testing.TB, id anonymize.Identifier) anonymize.Pseudonym {
	p, err := e.Pseudonym(id)
	require.NoError(t, err)
	return p
}

func TestOpenRefusesASecondEngine(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	_, err := Open(d.dir, durable(d.opts, DurableOptions{}))
	require.ErrorIs(t, err, ErrLocked)
	assert.Contains(t, err.Error(), d.dir)
	require.NoError(t, e.Close())
	e = d.open(t) // released by Close
	require.NoError(t, e.Close())
}

func TestOpenWrongKey(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	workload(t, e, d.clock, 20)
	require.NoError(t, e.Close())
	other := d.opts
	other.Key = mustKey(t, strings.Repeat("ab", 32))
	_, err := Open(d.dir, durable(other, DurableOptions{MaintenanceInterval: -1}))
	require.ErrorIs(t, err, ErrWrongKey)
	assert.Contains(t, err.Error(), "snapshot-")
	assert.Contains(t, err.Error(), d.opts.Key.Fingerprint().String())
	assert.NotContains(t, err.Error(), testKeyHex)
	e = d.open(t) // nothing was overwritten
	require.NoError(t, e.Close())
}

func logFile(t *testing.T, dir string) string {
	m, err := filepath.Glob(filepath.Join(dir, "log-*.wal"))
	require.NoError(t, err)
	require.Len(t, m, 1)
	return m[0]
}

func snapFile(t *testing.T, dir string) string {
	m, err := filepath.Glob(filepath.Join(dir, "snapshot-*.pfy"))
	require.NoError(t, err)
	require.Len(t, m, 1)
	return m[0]
}

func TestOpenTornTail(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tear     func(b []byte) []byte
		lastKept bool // whether the last frame, the one written last, survives
	}{
		{"half a frame", func(b []byte) []byte { return b[:len(b)-7] }, false},
		{"a frame header only", func(b []byte) []byte { return append(b, "PFY"...) }, true},
		{"zeros", func(b []byte) []byte { return append(b, make([]byte, 100)...) }, true},
		{"garbage", func(b []byte) []byte {
			return append(b, []byte("PFYB"+"\xff\x00\x00\x00garbage that is not a frame")...)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDurableEnv(t)
			e := d.open(t)
			workload(t, e, d.clock, 40)
			require.NoError(t, e.Add("runners", person(1000)))
			before := stateDump(t, e)
			require.NoError(t, e.Add("runners", person(1001))) // the frame torn below
			require.NoError(t, e.Close())
			lf := logFile(t, d.dir)
			b, err := os.ReadFile(lf)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(lf, tc.tear(b), 0o600))
			d.audit.Reset()
			e = d.open(t)
			defer e.Close()
			if tc.lastKept {
				assert.True(t, e.In(e.mustPseudonym(t, person(1001)), "runners"))
			} else {
				assert.Equal(t, before, stateDump(t, e))
				assert.False(t, e.In(e.mustPseudonym(t, person(1001)), "runners"))
			}
			assert.Contains(t, d.audit.String(), "personify.torn_log_tail")
			require.NoError(t, e.Add("runners", person(1002))) // appends after the cut
			require.NoError(t, e.Close())
			e = d.open(t)
			assert.True(t, e.In(e.mustPseudonym(t, person(1002)), "runners"))
		})
	}
}

func TestOpenCorruptLog(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	workload(t, e, d.clock, 60)
	require.NoError(t, e.Close())
	lf := logFile(t, d.dir)
	b, err := os.ReadFile(lf)
	require.NoError(t, err)
	orig := slices.Clone(b)
	b[len(b)/2] ^= 0x10
	require.NoError(t, os.WriteFile(lf, b, 0o600))
	_, err = Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), lf)
	assert.Contains(t, err.Error(), "offset")
	after, err := os.ReadFile(lf)
	require.NoError(t, err)
	assert.Equal(t, b, after, "nothing is overwritten")
	require.NoError(t, os.WriteFile(lf, orig, 0o600))
	d.open(t).Close()
}

func TestOpenCorruptSnapshot(t *testing.T) {
	for name, damage := range map[string]func([]byte) []byte{
		"bit flip":  func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
		"truncated": func(b []byte) []byte { return b[:len(b)*2/3] },
		"empty":     func(b []byte) []byte { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			d := newDurableEnv(t)
			e := d.open(t)
			workload(t, e, d.clock, 60)
			require.NoError(t, e.Compact())
			require.NoError(t, e.Close())
			sf := snapFile(t, d.dir)
			b, err := os.ReadFile(sf)
			require.NoError(t, err)
			bad := damage(slices.Clone(b))
			require.NoError(t, os.WriteFile(sf, bad, 0o600))
			_, err = Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
			require.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), sf)
			after, err := os.ReadFile(sf)
			require.NoError(t, err)
			assert.Equal(t, len(bad), len(after), "nothing is overwritten")
			assert.True(t, bytes.Equal(bad, after), "nothing is overwritten")
		})
	}
}

func TestOpenMissingSnapshot(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	workload(t, e, d.clock, 10)
	require.NoError(t, e.Close())
	require.NoError(t, os.Remove(snapFile(t, d.dir)))
	_, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "no snapshot")
}

// faultFS fails writes once a byte budget is spent (a full disk) or fails
// fsync on request.
type faultFS struct {
	wal.OS
	mu        sync.Mutex
	budget    int64 // bytes that may still be written; < 0: unlimited
	failSync  bool
	syncCalls int
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (wal.File, error) {
	fl, err := f.OS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: fl, fs: f}, nil
}

func (f *faultFS) set(budget int64, failSync bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.budget, f.failSync = budget, failSync
}

type faultFile struct {
	wal.File
	fs *faultFS
}

var errNoSpace = fmt.Errorf("write: %w", syscall.ENOSPC)

func (f *faultFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	budget := f.fs.budget
	if budget >= 0 {
		f.fs.budget = max(0, budget-int64(len(b)))
	}
	f.fs.mu.Unlock()
	if budget >= 0 && int64(len(b)) > budget {
		n, _ := f.File.WriteAt(b[:budget], off) // a partial write, as a full disk does
		return n, errNoSpace
	}
	return f.File.WriteAt(b, off)
}

func (f *faultFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	f.fs.syncCalls++
	if f.fs.failSync {
		return errors.New("sync: input/output error")
	}
	return f.File.Sync()
}

func TestDiskFull(t *testing.T) {
	d := newDurableEnv(t)
	fs := &faultFS{budget: -1}
	open := func() *Engine {
		e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1, fs: fs}))
		require.NoError(t, err)
		return e
	}
	e := open()
	workload(t, e, d.clock, 40)
	before := stateDump(t, e)

	fs.set(10, false) // the disk fills up mid-record
	err := e.Add("runners", people(5000, 5100)...)
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.ErrorIs(t, err, errWrite)
	assert.Equal(t, before, stateDump(t, e), "a failed write is not visible")
	assert.False(t, e.In(e.mustPseudonym(t, person(5000)), "runners"))

	fs.set(-1, true) // fsync fails
	require.Error(t, e.SetConsent(person(5001), "ads", false))
	assert.Equal(t, before, stateDump(t, e))

	fs.set(-1, false) // space is back
	require.NoError(t, e.Add("runners", person(5002)))
	assert.True(t, e.In(e.mustPseudonym(t, person(5002)), "runners"))
	want := stateDump(t, e)
	require.NoError(t, e.Close())
	e = open()
	defer e.Close()
	assert.Equal(t, want, stateDump(t, e), "the log holds nothing of the failed writes")
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	d := newDurableEnv(t)
	fs := &faultFS{budget: -1}
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1, fs: fs}))
	require.NoError(t, err)
	workload(t, e, d.clock, 5)
	fs.mu.Lock()
	fs.syncCalls = 0
	fs.mu.Unlock()
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				assert.NoError(t, e.Add("runners", person(10000+w*each+i)))
			}
		})
	}
	wg.Wait()
	fs.mu.Lock()
	syncs := fs.syncCalls
	fs.mu.Unlock()
	t.Logf("%d writes, %d fsyncs", writers*each, syncs)
	assert.Less(t, syncs, writers*each, "concurrent writers share fsyncs")
	want := stateDump(t, e)
	require.NoError(t, e.Close())
	e, err = Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, err)
	defer e.Close()
	assert.Equal(t, want, stateDump(t, e))
}

// TestForgetIsPhysical forgets people and then scans every byte under the
// directory for their pseudonyms (in every encoding a file could hold them:
// binary either way round, hex) and their raw identifiers.
func TestForgetIsPhysical(t *testing.T) {
	d := newDurableEnv(t)
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: 5 * time.Millisecond, PurgeWithin: 40 * time.Millisecond}))
	require.NoError(t, err)
	defer e.Close()
	workload(t, e, d.clock, 60)
	require.NoError(t, e.Add("runners", people(7000, 7100)...))
	require.NoError(t, e.SetConsent(person(7001), "email", true))
	require.NoError(t, e.Suppress(person(7002), "ads"))
	require.NoError(t, e.Compact()) // the people are in a snapshot, too
	require.NoError(t, e.Add("runners", person(7003)))

	var secrets [][]byte
	for i := 7000; i < 7010; i++ {
		kps, err := e.keyring().AppendPseudonyms(nil, person(i), time.Time{})
		require.NoError(t, err)
		for _, kp := range kps {
			var le, be [8]byte
			for k := range 8 {
				le[k], be[7-k] = byte(kp.Pseudonym>>(8*k)), byte(kp.Pseudonym>>(8*k))
			}
			secrets = append(secrets, le[:], be[:], []byte(kp.Pseudonym.String()))
		}
		secrets = append(secrets, []byte(fmt.Sprintf("person%d@example.com", i)))
	}
	// The scan finds what the files hold: the snapshot has the people.
	require.True(t, dirHolds(t, d.dir, secrets[0]), "the scan must see what is in the files")
	var receipts []Receipt
	for i := 7000; i < 7010; i++ {
		r, err := e.Forget(person(i))
		require.NoError(t, err)
		assert.False(t, r.PurgeBy.Before(r.DurableAt))
		receipts = append(receipts, r)
	}
	require.Eventually(t, func() bool {
		for _, r := range receipts {
			if !e.Purged(r) {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "maintenance compacts after Forget")
	for _, s := range secrets {
		assert.False(t, dirHolds(t, d.dir, s), "%x survives in a file", s)
	}
	// Still there: everyone else.
	assert.True(t, e.In(e.mustPseudonym(t, person(7050)), "runners"))
}

func dirHolds(t *testing.T, dir string, needle []byte) bool {
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // renamed or removed by a compaction meanwhile
		}
		require.NoError(t, err)
		if bytes.Contains(b, needle) {
			return true
		}
	}
	return false
}

func TestMaintenanceRunsRetentionAndKeyExpiry(t *testing.T) {
	d := newDurableEnv(t)
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: 2 * time.Millisecond}))
	require.NoError(t, err)
	defer e.Close()
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "recent", Purpose: "ads", Retention: 24 * time.Hour}))
	require.NoError(t, e.Add("recent", people(0, 10)...))
	next := mustKey(t, strings.Repeat("cd", 32))
	require.NoError(t, e.RotateKey(next, 48*time.Hour))
	require.Equal(t, 10, e.Stats().Memberships)

	d.clock.Advance(25 * time.Hour) // the injected clock: retention is due
	require.Eventually(t, func() bool { return e.Stats().Memberships == 0 }, 5*time.Second, time.Millisecond)
	d.clock.Advance(24 * time.Hour) // and the old key's grace period has ended
	require.Eventually(t, func() bool { return len(e.keyring().Keys()) == 1 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, next.Fingerprint(), e.KeyFingerprint())
}

func TestRotateKeySurvivesReopen(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	workload(t, e, d.clock, 30)
	next := mustKey(t, strings.Repeat("cd", 32))
	require.NoError(t, e.RotateKey(next, 30*24*time.Hour))
	require.NoError(t, e.Add("runners", person(3)))
	want := stateDump(t, e)
	require.NoError(t, e.Close())

	// Reopening needs both keys while the old one is in its grace period.
	opts := d.opts
	opts.Key = next
	_, err := Open(d.dir, durable(opts, DurableOptions{MaintenanceInterval: -1}))
	require.ErrorIs(t, err, ErrWrongKey)
	opts.PreviousKeys = []PreviousKey{{Key: d.opts.Key, Until: t0.Add(40 * 24 * time.Hour)}}
	e, err = Open(d.dir, durable(opts, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, err)
	defer e.Close()
	assert.Equal(t, want, stateDump(t, e))
	assert.Equal(t, next.Fingerprint(), e.KeyFingerprint())
}

func TestLoadSnapshot(t *testing.T) {
	clock := &fakeClock{t: t0}
	opts := Options{Key: mustKey(t, testKeyHex), K: 3, Now: clock.Now}
	builder, err := New(opts)
	require.NoError(t, err)
	workload(t, builder, clock, 200)
	var buf bytes.Buffer
	n, err := builder.WriteSnapshot(&buf)
	require.NoError(t, err)
	assert.Equal(t, int64(buf.Len()), n)
	raw := slices.Clone(buf.Bytes())

	replica, err := New(opts)
	require.NoError(t, err)
	require.NoError(t, replica.LoadSnapshot(bytes.NewReader(raw)))
	assert.Equal(t, stateDump(t, builder), stateDump(t, replica))
	p := builder.mustPseudonym(t, person(150))
	assert.Equal(t, builder.Segments(nil, p, "ads"), replica.Segments(nil, p, "ads"))
	workload(t, replica, clock, 20) // a loaded engine takes writes

	// A damaged snapshot changes nothing.
	before := stateDump(t, replica)
	bad := slices.Clone(raw)
	bad[len(bad)/3] ^= 4
	require.ErrorIs(t, replica.LoadSnapshot(bytes.NewReader(bad)), ErrCorrupt)
	require.ErrorIs(t, replica.LoadSnapshot(bytes.NewReader(raw[:len(raw)/2])), ErrCorrupt)
	assert.Equal(t, before, stateDump(t, replica))

	// Another key is refused.
	other, err := New(Options{Key: mustKey(t, strings.Repeat("ab", 32)), K: 3, Now: clock.Now})
	require.NoError(t, err)
	require.ErrorIs(t, other.LoadSnapshot(bytes.NewReader(raw)), ErrWrongKey)

	// A durable replica persists what it loaded.
	d := newDurableEnv(t)
	de := d.open(t)
	require.NoError(t, de.LoadSnapshot(bytes.NewReader(raw)))
	require.NoError(t, de.Close())
	de = d.open(t)
	defer de.Close()
	assert.Equal(t, stateDump(t, builder), stateDump(t, de))
}

// TestLoadSnapshotIsAtomic loads two snapshots over and over while readers
// check that every answer comes from one of them, never a mix.
func TestLoadSnapshotIsAtomic(t *testing.T) {
	clock := &fakeClock{t: t0}
	opts := Options{Key: mustKey(t, testKeyHex), K: 1, Now: clock.Now}
	snap := func(seg string, from int) []byte {
		e, err := New(opts)
		require.NoError(t, err)
		require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
		for _, s := range []string{"a", "b", "c"} { // the same ids in both
			require.NoError(t, e.Define(Segment{Name: s, Purpose: "ads"}))
		}
		require.NoError(t, e.Add(seg, people(from, from+200)...))
		var buf bytes.Buffer
		_, err = e.WriteSnapshot(&buf)
		require.NoError(t, err)
		return buf.Bytes()
	}
	snaps := [][]byte{snap("a", 0), snap("b", 100)}
	e, err := New(opts)
	require.NoError(t, err)
	require.NoError(t, e.LoadSnapshot(bytes.NewReader(snaps[0])))
	ps := make([]anonymize.Pseudonym, 300)
	for i := range ps {
		ps[i] = e.mustPseudonym(t, person(i))
	}
	// In snapshot 0, people 0-199 are in a; in snapshot 1, people 100-299 in b.
	valid := func(i int, got []string) bool {
		s0 := i < 200 && slices.Equal(got, []string{"a"}) || i >= 200 && len(got) == 0
		s1 := i >= 100 && slices.Equal(got, []string{"b"}) || i < 100 && len(got) == 0
		return s0 || s1
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad sync.Map
	for range 2 {
		wg.Go(func() {
			var dst []string
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				i := k % len(ps)
				dst = e.Segments(dst[:0], ps[i], "ads")
				inA, inB := e.In(ps[i], "a"), e.In(ps[i], "b")
				if !valid(i, dst) || inA && i >= 200 || inB && i < 100 {
					bad.Store(i, slices.Clone(dst))
				}
			}
		})
	}
	for k := range 200 {
		require.NoError(t, e.LoadSnapshot(bytes.NewReader(snaps[k%2])))
	}
	close(stop)
	wg.Wait()
	bad.Range(func(k, v any) bool {
		t.Errorf("person %v: %v is from neither snapshot", k, v)
		return true
	})
}

func TestOnSyncTimesEveryFsync(t *testing.T) {
	d := newDurableEnv(t)
	var n atomic.Int64
	o := durable(d.opts, DurableOptions{MaintenanceInterval: -1, OnSync: func(dt time.Duration) {
		if dt >= 0 {
			n.Add(1)
		}
	}})
	e, err := Open(d.dir, o)
	require.NoError(t, err)
	defer e.Close()
	before := n.Load()
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	assert.Greater(t, n.Load(), before, "a logged change is fsynced, and the fsync timed")
}
