package personify

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/personify-go/personify/segment"
)

// state is an engine's whole stored state, as a snapshot loads it before
// it is installed.
type state struct {
	meta          snapMeta
	ring          *anonymize.Keyring
	missing       []anonymize.KeyInfo // previous keys of the data the loader was not given
	dir           *index.Directory
	states        []privState
	stateIDs      map[privState]uint32
	segs          map[string]*segState
	purposes      map[string]*purposeState
	purposeByBit  []*purposeState
	suppressedAll *segment.Set
	live          *segment.Set
	keyGen        map[anonymize.Fingerprint]*segment.Set
	aliases       map[anonymize.Pseudonym]alias
	links         map[uint32][]LinkedPseudonym
	caps          map[string]*capState
	doNotReAdd    map[anonymize.Pseudonym]anonymize.Fingerprint
	pending       []pendingErasure
	receiptPubs   []ed25519.PublicKey
}

// corrupt builds an ErrCorrupt error for a file (or "snapshot") at offset.
func corrupt(name string, off int64, format string, args ...any) error {
	return fmt.Errorf("%w: %s at offset %d: %s", ErrCorrupt, name, off, fmt.Sprintf(format, args...))
}

// readState reads and checks a snapshot. name is used in errors. keys
// gives the keys the engine may use, by fingerprint; hasher makes their
// hashers.
func readState(r io.Reader, name string, keys map[anonymize.Fingerprint]anonymize.Key, hasher func(anonymize.Key) anonymize.Hasher) (*state, error) {
	sr, err := segment.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	}
	st := &state{segs: map[string]*segState{}, purposes: map[string]*purposeState{},
		keyGen: map[anonymize.Fingerprint]*segment.Set{}, aliases: map[anonymize.Pseudonym]alias{},
		links: map[uint32][]LinkedPseudonym{}, doNotReAdd: map[anonymize.Pseudonym]anonymize.Fingerprint{}}
	var slots []byte
	var chunks [][]byte
	sets := map[string]*segment.Section{}
	haveMeta := false
	for {
		sec, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
		}
		off := sec.Offset
		switch {
		case sec.Name == snapMetaName:
			if err := json.Unmarshal(sec.Blob(), &st.meta); err != nil {
				return nil, corrupt(name, off, "metadata: %v", err)
			}
			if st.meta.Format < 1 || st.meta.Format > snapFormat {
				return nil, corrupt(name, off, "snapshot format %d, this version reads 1 to %d", st.meta.Format, snapFormat)
			}
			if st.meta.Endian != snapLittleEndn || !index.LittleEndian() {
				return nil, corrupt(name, off, "snapshot is %s-endian; this machine cannot load it", st.meta.Endian)
			}
			if err := st.setKeys(keys, hasher); err != nil {
				return nil, inContext(err, "%s", name)
			}
			haveMeta = true
		case !haveMeta:
			return nil, corrupt(name, off, "section %q before the metadata", sec.Name)
		case sec.Name == snapSlotsName:
			b := sec.Blob()
			if len(b)%slotSize != 0 || int64(len(b)/slotSize) != sec.Aux {
				return nil, corrupt(name, off, "index table of %d bytes", len(b))
			}
			slots = b
		case sec.Name == snapArenaName:
			if sec.Aux != int64(len(chunks)) || len(chunks) >= index.MaxChunks {
				return nil, corrupt(name, off, "index arena chunk %d out of order", sec.Aux)
			}
			chunks = append(chunks, sec.Blob())
		default:
			sets[sec.Name] = sec
		}
	}
	if !haveMeta || slots == nil || len(chunks) == 0 {
		return nil, fmt.Errorf("%w: %s: the snapshot lacks its metadata or index", ErrCorrupt, name)
	}
	if err := st.build(sets, slots, chunks); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	}
	return st, nil
}

// setKeys builds the keyring the snapshot was written under from the keys
// the caller has.
func (st *state) setKeys(keys map[anonymize.Fingerprint]anonymize.Key, hasher func(anonymize.Key) anonymize.Hasher) error {
	var cur *snapKey
	for i := range st.meta.Ring {
		if st.meta.Ring[i].Current {
			cur = &st.meta.Ring[i]
		}
	}
	if cur == nil {
		return fmt.Errorf("%w: no current key in the metadata", ErrCorrupt)
	}
	k, ok := keys[cur.Key]
	if !ok {
		have := make([]string, 0, len(keys))
		for fp := range keys {
			have = append(have, fp.String())
		}
		slices.Sort(have)
		return fmt.Errorf("%w: key %s, and the keys given have fingerprints %s: open it with the key it was written with (Options.Key, or Options.PreviousKeys during a rotation)",
			ErrWrongKey, cur.Key, strings.Join(have, ", "))
	}
	st.ring = anonymize.NewKeyring(k, hasher)
	for _, rk := range st.meta.Ring {
		if rk.Current {
			continue
		}
		if rk.Until.IsZero() || rk.Key.IsZero() {
			return fmt.Errorf("%w: previous key %s has no end to its grace period", ErrCorrupt, rk.Key)
		}
		if pk, ok := keys[rk.Key]; ok {
			if err := st.ring.Add(pk, rk.Until); err != nil {
				return err
			}
			continue
		}
		// A previous key not given stays in the keyring as a name: the
		// data is still under it (so every replica agrees on what a
		// change means, and its data is shredded when its grace ends),
		// but this engine cannot compute pseudonyms under it, and writes
		// by identifier are refused until it is given.
		st.missing = append(st.missing, anonymize.KeyInfo{Fingerprint: rk.Key, Until: rk.Until})
	}
	return nil
}

// build checks the loaded sections against the metadata and assembles the
// state. Every reference is checked, so a damaged snapshot whose checksums
// were forged still cannot make a lookup read out of bounds.
func (st *state) build(sets map[string]*segment.Section, slots []byte, chunks [][]byte) error {
	m := &st.meta
	getSet := func(name string) (*segment.Set, error) {
		sec, ok := sets[name]
		if !ok || sec.Set() == nil {
			return nil, fmt.Errorf("set %q is missing", name)
		}
		return sec.Set(), nil
	}
	var err error
	if st.live, err = getSet("live"); err != nil {
		return err
	}
	if st.suppressedAll, err = getSet("suppressed-all"); err != nil {
		return err
	}
	for _, k := range m.Ring {
		if s, ok := sets["keygen/"+k.Key.String()]; ok && s.Set() != nil {
			st.keyGen[k.Key] = s.Set()
		} else {
			st.keyGen[k.Key] = segment.New()
		}
	}
	for i, p := range m.Purposes {
		model := ConsentModel(p.Model)
		if int(p.Bit) != i || i >= MaxPurposes || validName("purpose", p.Name) != nil || st.purposes[p.Name] != nil || model != OptIn && model != OptOut {
			return fmt.Errorf("purpose %d (%q) is not valid", i, p.Name)
		}
		ps := &purposeState{Purpose: Purpose{p.Name, model, p.Description}, bit: p.Bit}
		for _, part := range []struct {
			name string
			dst  **segment.Set
		}{{"granted", &ps.granted}, {"denied", &ps.denied}, {"suppressed", &ps.suppressed}} {
			if *part.dst, err = getSet(fmt.Sprintf("purpose/%d/%s", p.Bit, part.name)); err != nil {
				return err
			}
		}
		st.purposes[p.Name] = ps
		st.purposeByBit = append(st.purposeByBit, ps)
	}
	for _, s := range m.Segments {
		ps := st.purposes[s.Purpose]
		if ps == nil || s.ID >= m.NextSeg || validName("segment", s.Name) != nil || st.segs[s.Name] != nil || s.Retention < 0 {
			return fmt.Errorf("segment %q (id %d) is not valid", s.Name, s.ID)
		}
		sec, ok := sets["segment/"+strconv.FormatUint(uint64(s.ID), 10)]
		if !ok {
			return fmt.Errorf("members of segment %q are missing", s.Name)
		}
		ss := &segState{Segment: s.segment(), id: s.ID, purpose: ps}
		switch {
		case s.Retention > 0 && sec.Timed() != nil && sec.Timed().Epoch() == epochFor(s.Retention):
			ss.timed = sec.Timed()
		case s.Retention == 0 && sec.Set() != nil:
			ss.set = sec.Set()
		default:
			return fmt.Errorf("members of segment %q do not match its retention", s.Name)
		}
		st.segs[s.Name] = ss
		ps.segments = append(ps.segments, ss)
	}
	for _, ps := range st.purposeByBit {
		slices.SortFunc(ps.segments, func(a, b *segState) int { return strings.Compare(a.Name, b.Name) })
	}
	st.stateIDs = map[privState]uint32{}
	for i, s := range m.States {
		ps := privState{s.Granted, s.Denied, s.Suppressed, s.All}
		if _, dup := st.stateIDs[ps]; dup || (i == 0 && ps != (privState{})) {
			return fmt.Errorf("privacy state %d is not valid", i)
		}
		st.stateIDs[ps] = uint32(i)
		st.states = append(st.states, ps)
	}
	if len(st.states) == 0 {
		return fmt.Errorf("no privacy states")
	}
	for _, a := range m.Aliases {
		st.aliases[a.P] = alias{ord: a.Ord, key: a.Key, primary: a.Primary}
	}
	for _, k := range m.NoReAdd {
		st.doNotReAdd[k.P] = k.Key
	}
	for i, p := range m.Pending {
		if p.Seq > m.Seq || i > 0 && p.Seq <= m.Pending[i-1].Seq || p.PurgeBy.Before(p.At) {
			return fmt.Errorf("pending erasure %d is not valid", i)
		}
		st.pending = append(st.pending, pendingErasure{seq: p.Seq, at: p.At, purgeBy: p.PurgeBy})
	}
	for i, h := range m.Receipts {
		pub, err := hex.DecodeString(h)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("receipt key %d is not valid", i)
		}
		st.receiptPubs = append(st.receiptPubs, pub)
	}

	// The index, every entry checked against the states and segments.
	d, err := index.Load(m.Dir, m.Arena, slots, chunks, func(state uint32, ids []uint32) error {
		if int(state) >= len(st.states) {
			return fmt.Errorf("index entry has privacy state %d of %d", state, len(st.states))
		}
		for _, id := range ids {
			if id >= m.NextSeg {
				return fmt.Errorf("index entry has segment id %d, past %d", id, m.NextSeg)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if d.Len() != st.live.Len() {
		return fmt.Errorf("index holds %d people, the live set %d", d.Len(), st.live.Len())
	}
	for _, o := range d.Free() {
		if st.live.Contains(o) {
			return fmt.Errorf("free ordinal %d is in use", o)
		}
	}
	if err := st.buildLinks(d); err != nil {
		return err
	}
	if err := st.buildCaps(sets); err != nil {
		return err
	}
	st.dir = d
	return nil
}

// buildLinks checks the linked people against the index: each a live
// ordinal whose 2 to MaxLinked pseudonyms, of valid kinds and keys in the
// ring, all hold it, no pseudonym in two people, and the extra
// pseudonyms exactly the index's slots beyond one per person.
func (st *state) buildLinks(d *index.Directory) error {
	extra := 0
	seen := map[anonymize.Pseudonym]bool{}
	for i, l := range st.meta.Links {
		if _, dup := st.links[l.Ord]; dup || !st.live.Contains(l.Ord) || len(l.IDs) < 2 || len(l.IDs) > MaxLinked {
			return fmt.Errorf("linked person %d is not valid", i)
		}
		for _, id := range l.IDs {
			en, ok := d.Get(id.Pseudonym)
			_, inRing := st.keyGen[id.Key]
			if !ok || en.Ord() != l.Ord || seen[id.Pseudonym] || id.Kind < anonymize.KindEmail || id.Kind > anonymize.KindDeviceID || !inRing {
				return fmt.Errorf("linked person %d has a pseudonym that is not valid", i)
			}
			seen[id.Pseudonym] = true
		}
		st.links[l.Ord] = l.IDs
		extra += len(l.IDs) - 1
	}
	if d.Slots()-d.Len() != extra {
		return fmt.Errorf("index holds %d pseudonyms of %d people, the links account for %d more", d.Slots(), d.Len(), extra)
	}
	return nil
}

// install replaces the engine's state with st, its keyring included. The
// caller holds mu and keeps lock-free readers out (gen odd).
func (e *Engine) installLocked(st *state) {
	e.kr.Store(&keyState{ring: st.ring, missing: st.missing})
	e.dir.Replace(st.dir)
	e.segs = st.segs
	e.nextSegID = st.meta.NextSeg
	e.purposes = st.purposes
	e.purposeByBit = st.purposeByBit
	e.suppressedAll = st.suppressedAll
	e.live = st.live
	e.keyGen = st.keyGen
	e.aliases = st.aliases
	e.aliasesOf = indexAliases(st.aliases)
	e.links = st.links
	e.caps, e.nextCapID = st.caps, st.meta.NextCap
	e.publishCapsLocked()
	e.doNotReAdd = st.doNotReAdd
	e.pending = st.pending
	e.receipt.merge(st.receiptPubs)
	e.stateIDs = st.stateIDs
	states := st.states
	e.states.Store(&states)
	e.hasAliases.Store(len(e.aliases) > 0)
	for _, s := range e.segs {
		e.refreshLocked(s)
	}
	e.publishLocked()
}

// errReplicaLoad refuses LoadSnapshot on a replica: a state that did not
// come from its journal would split it from the fleet for good.
var errReplicaLoad = errors.New("personify: LoadSnapshot on a replica would split it from its fleet: a replica's snapshots come from its journal's reader")

// installSnapshot makes st the engine's state, atomically for lookups.
func (e *Engine) installSnapshot(st *state) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed.Load() {
		return ErrClosed
	}
	e.gen.Add(1)        // odd: lock-free lookups step aside
	e.installLocked(st) // the snapshot's keyring too: a fleet's replicas agree on it
	e.gen.Add(1)
	// This engine's batches in flight were counted into the state the
	// snapshot replaces: one that lands is counted as every replica counts
	// it (LoadSnapshot waits for a flush, so only a replica has any here).
	if e.replica != nil { // a batch at or before the snapshot's place is in it and never comes back
		e.leaveFlightLocked(func(b flightBatch) bool { return b.stored != 0 && b.stored <= st.meta.Seq })
	}
	for name := range e.flights {
		e.redoFlightLocked(name)
	}
	if e.replica == nil {
		// The snapshot's erasures were made, and numbered, elsewhere; this
		// engine's own files are rewritten (durable) or there are none.
		e.pending = nil
	} else if e.schedulePurge != nil { // the same journal: its deadlines hold here too
		for _, p := range e.pending {
			e.schedulePurge(p.due())
		}
	}
	e.event("load_snapshot", slog.Int("people", e.dir.Len()), slog.Int("segments", len(e.segs)))
	return nil
}

// LoadSnapshot replaces the engine's whole state with a snapshot written by
// WriteSnapshot (of this engine or another with the same key), for fleets
// where one process builds segments and replicas load them. The snapshot
// is read and checked completely before anything changes; a bad snapshot
// returns an error wrapping ErrCorrupt (or ErrWrongKey) and leaves the
// engine as it was. Lookups see the old state or the new one, never a mix;
// lookups that overlap the switch take the locked path for a moment.
//
// The snapshot's keys must be among the engine's (Options.Key and
// Options.PreviousKeys). A durable engine writes the loaded state as its
// new snapshot before LoadSnapshot returns.
func (e *Engine) LoadSnapshot(r io.Reader) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if e.replica != nil {
		return errReplicaLoad
	}
	st, err := readState(r, "snapshot", e.keySet(), e.hasher)
	if err != nil {
		return err
	}
	// No flush may be under way: a batch of the old state logged after the
	// new one would be counted into it by a replay, not by this engine.
	defer e.lockFlush()()
	if e.store == nil {
		return e.installSnapshot(st)
	}
	return e.store.exclusive(func() error {
		if err := e.installSnapshot(st); err != nil {
			return err
		}
		if err := e.store.compactLocked(e); err != nil {
			// The loaded state is in memory only: writes are refused until
			// a snapshot of it is on disk (each write retries it), so that
			// nothing is acknowledged on top of a state a restart would lose.
			e.store.needSnapshot = err
			return fmt.Errorf("personify: LoadSnapshot: the state was loaded but could not be saved (writes wait until it is): %w", err)
		}
		return nil
	})
}
