package personify

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/index"
	"github.com/personify-go/personify/segment"
)

// A snapshot is a file in the segment package's codec (magic, version,
// per-section lengths and xxhash64 checksums, Roaring's portable format for
// the sets) holding the whole engine:
//
//	blob  "personify/meta"      JSON (snapMeta): definitions, key fingerprints, privacy states, aliases,
//	                            erasures not yet physically complete, receipt public keys
//	set   "live"                every stored ordinal
//	set   "suppressed-all"
//	set   "keygen/<fp>"         ordinals stored under each key
//	set   "purpose/<bit>/granted", ".../denied", ".../suppressed"
//	set or timed "segment/<id>" members, with their add times when the segment has a retention
//	blob  "index/slots"         the lookup index's directory table, as in memory (little endian)
//	blob  "index/arena"         its overflow records, one section per chunk
//
// The index sections are the in-memory layout, so that opening a snapshot
// copies memory instead of re-inserting 100 million memberships one by one
// (the target: open at >= 1 GB/s); they are checked entry by entry on load.
// Only pseudonyms, ordinals and names are stored: no identifier, no key.
// Format 2 added the pending erasures and the receipt keys; format 1
// snapshots (earlier releases) are read, with none of either. Format 3
// places the index's keys from line homes (index.Meta.Homes) and may hold
// Elias-Fano inline entries: releases that read up to format 2 refuse it,
// where they would have adopted the table and missed keys; this one
// rebuilds the table of a format 1 or 2 snapshot.
const (
	snapFormat     = 3
	snapMetaName   = "personify/meta"
	snapSlotsName  = "index/slots"
	snapArenaName  = "index/arena"
	snapLittleEndn = "little"
)

type snapMeta struct {
	Format   int             `json:"format"`
	Endian   string          `json:"endian"`
	Seq      uint64          `json:"seq"` // the last log record the snapshot includes
	Ring     []snapKey       `json:"ring"`
	Purposes []snapPurpose   `json:"purposes"`
	Segments []snapSegment   `json:"segments"`
	NextSeg  uint32          `json:"next_segment_id"`
	States   []snapState     `json:"states"`
	Aliases  []snapAlias     `json:"aliases"`
	Links    []snapLink      `json:"links,omitempty"` // linked people, by ordinal
	Caps     []snapCap       `json:"caps,omitempty"`  // frequency caps, by name
	NextCap  uint32          `json:"next_cap_id,omitempty"`
	NoReAdd  []snapKeyed     `json:"do_not_re_add"`
	Dir      index.Meta      `json:"directory"`
	Arena    index.ArenaMeta `json:"arena"`
	Pending  []snapPending   `json:"pending_erasures,omitempty"`
	Receipts []string        `json:"receipt_keys,omitempty"` // Ed25519 public keys, hex, oldest first
}

type snapPending struct {
	Seq     uint64    `json:"seq"`
	At      time.Time `json:"at"`
	PurgeBy time.Time `json:"purge_by"`
}

type snapKey struct {
	Key     anonymize.Fingerprint `json:"key"`
	Current bool                  `json:"current,omitempty"`
	Until   time.Time             `json:"until"`
}

type snapPurpose struct {
	Name        string `json:"name"`
	Model       uint8  `json:"model"`
	Description string `json:"description"`
	Bit         uint8  `json:"bit"`
}

// snapSegment is a segment's definition as snapshots store it (the field
// names of format 1, independent of Segment's JSON).
type snapSegment struct {
	Name        string        `json:"Name"`
	Purpose     string        `json:"Purpose"`
	Description string        `json:"Description"`
	Retention   time.Duration `json:"Retention"`
	MinSize     int           `json:"MinSize"`
	Sensitive   bool          `json:"Sensitive"`
	ID          uint32        `json:"id"`
}

func (s snapSegment) segment() Segment {
	return Segment{s.Name, s.Purpose, s.Description, s.Retention, s.MinSize, s.Sensitive}
}

type snapState struct {
	Granted    uint64 `json:"g,omitempty"`
	Denied     uint64 `json:"d,omitempty"`
	Suppressed uint64 `json:"s,omitempty"`
	All        bool   `json:"a,omitempty"`
}

type snapLink struct {
	Ord uint32            `json:"ord"`
	IDs []LinkedPseudonym `json:"ids"`
}

type snapAlias struct {
	P       anonymize.Pseudonym   `json:"p"`
	Ord     uint32                `json:"ord"`
	Key     anonymize.Fingerprint `json:"key"`
	Primary anonymize.Pseudonym   `json:"primary"`
}

type snapKeyed struct {
	P   anonymize.Pseudonym   `json:"p"`
	Key anonymize.Fingerprint `json:"key"`
}

// ErrCorrupt is returned when a snapshot or log is damaged or inconsistent.
// The error names the file and the offset.
var ErrCorrupt = errors.New("personify: stored data is corrupt")

// WriteSnapshot writes the engine's whole state to w in the snapshot format
// (see LoadSnapshot) and returns the bytes written. Lookups continue while
// it runs; writes wait. The snapshot holds pseudonyms, never identifiers or
// keys, and names the key fingerprints it was written under.
func (e *Engine) WriteSnapshot(w io.Writer) (int64, error) {
	if e.store != nil {
		var n int64
		defer e.lockFlush()()
		err := e.store.exclusive(func() error {
			var err error
			n, err = e.writeSnapshot(w, e.store.seq)
			return err
		})
		return n, err
	}
	if e.replica != nil {
		_, n, err := e.writeReplicaSnapshot(w)
		return n, err
	}
	return e.writeSnapshot(w, 0)
}

// writeSnapshot writes the state; the caller keeps writers out.
func (e *Engine) writeSnapshot(w io.Writer, seq uint64) (int64, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed.Load() {
		return 0, ErrClosed
	}
	cw := &countWriter{w: w}
	sw, err := segment.NewWriter(cw)
	if err != nil {
		return cw.n, err
	}
	dirMeta, arenaMeta, slots := e.dir.Snapshot()
	meta := snapMeta{Format: snapFormat, Endian: snapLittleEndn, Seq: seq, NextSeg: e.nextSegID, Dir: dirMeta, Arena: arenaMeta}
	for _, k := range e.ringKeys() {
		meta.Ring = append(meta.Ring, snapKey{Key: k.Fingerprint, Current: k.Current, Until: k.Until})
	}
	for _, ps := range e.purposeByBit {
		meta.Purposes = append(meta.Purposes, snapPurpose{ps.Name, uint8(ps.Model), ps.Description, ps.bit})
	}
	for _, st := range e.segs {
		g := st.Segment
		meta.Segments = append(meta.Segments, snapSegment{g.Name, g.Purpose, g.Description, g.Retention, g.MinSize, g.Sensitive, st.id})
	}
	slices.SortFunc(meta.Segments, func(a, b snapSegment) int { return int(a.ID) - int(b.ID) })
	for _, s := range *e.states.Load() {
		meta.States = append(meta.States, snapState{s.granted, s.denied, s.suppressed, s.all})
	}
	for p, a := range e.aliases {
		meta.Aliases = append(meta.Aliases, snapAlias{p, a.ord, a.key, a.primary})
	}
	for p, k := range e.doNotReAdd {
		meta.NoReAdd = append(meta.NoReAdd, snapKeyed{p, k})
	}
	for ord, l := range e.links {
		meta.Links = append(meta.Links, snapLink{ord, l})
	}
	slices.SortFunc(meta.Links, func(a, b snapLink) int { return cmp.Compare(a.Ord, b.Ord) })
	e.capsMetaLocked(&meta)
	purged := e.purgedThrough()
	for _, p := range e.pending {
		if p.seq > purged && p.seq <= seq { // (an engine without a log has none)
			meta.Pending = append(meta.Pending, snapPending{p.seq, p.at.UTC(), p.purgeBy.UTC()})
		}
	}
	e.receipt.current(e) // the current receipt key is in the history
	for _, pub := range e.receipt.history() {
		meta.Receipts = append(meta.Receipts, hex.EncodeToString(pub))
	}
	// Maps iterate in random order: sort, so that one state has one
	// snapshot.
	slices.SortFunc(meta.Aliases, func(a, b snapAlias) int { return cmp.Compare(a.P, b.P) })
	slices.SortFunc(meta.NoReAdd, func(a, b snapKeyed) int { return cmp.Compare(a.P, b.P) })
	mb, err := json.Marshal(meta)
	if err != nil {
		return cw.n, err
	}
	if err := sw.Blob(snapMetaName, snapFormat, mb); err != nil {
		return cw.n, err
	}
	if err := sw.Set("live", e.live); err != nil {
		return cw.n, err
	}
	if err := sw.Set("suppressed-all", e.suppressedAll); err != nil {
		return cw.n, err
	}
	for fp, s := range e.keyGen {
		if err := sw.Set("keygen/"+fp.String(), s); err != nil {
			return cw.n, err
		}
	}
	for _, ps := range e.purposeByBit {
		for _, part := range []struct {
			name string
			s    *segment.Set
		}{{"granted", ps.granted}, {"denied", ps.denied}, {"suppressed", ps.suppressed}} {
			if err := sw.Set(fmt.Sprintf("purpose/%d/%s", ps.bit, part.name), part.s); err != nil {
				return cw.n, err
			}
		}
	}
	for _, s := range meta.Segments {
		st := e.segs[s.Name]
		name := "segment/" + strconv.FormatUint(uint64(st.id), 10)
		if st.timed != nil {
			err = sw.Timed(name, st.timed)
		} else {
			err = sw.Set(name, st.set)
		}
		if err != nil {
			return cw.n, err
		}
	}
	if err := e.writeCapsLocked(&meta, sw); err != nil {
		return cw.n, err
	}
	if err := sw.Blob(snapSlotsName, int64(len(slots)/slotSize), slots); err != nil {
		return cw.n, err
	}
	chunk := 0
	if err := e.dir.WriteRecords(func(c []byte) error {
		chunk++
		return sw.Blob(snapArenaName, int64(chunk-1), c)
	}); err != nil {
		return cw.n, err
	}
	err = sw.Close()
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// slotSize is the size of one directory slot in the snapshot's table.
const slotSize = int(unsafe.Sizeof(index.Slot{}))
