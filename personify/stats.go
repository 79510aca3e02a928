package personify

import (
	"time"

	"github.com/personify-go/personify/personify/internal/index"
)

// Stats describes an engine's contents and memory.
//
// The zero Stats is an empty engine's. A Stats is a plain value, a copy taken
// at one moment, safe to share between goroutines.
type Stats struct {
	People      int    `json:"people"`       // people stored: a person with linked identifiers counts once
	Pseudonyms  int    `json:"pseudonyms"`   // pseudonyms people are stored under (linked identifiers each count)
	Segments    int    `json:"segments"`     // segments defined
	Memberships int    `json:"memberships"`  // memberships stored, expired ones Expire has not dropped included
	MemoryBytes uint64 `json:"memory_bytes"` // estimated memory of the stored data, the frequency counters included
	CapCounters int    `json:"cap_counters"` // (person, cap) pairs holding a frequency count
	// PendingErasures counts erasures that are durable but not physically
	// complete yet (a file or journal row may still hold the person);
	// OldestPendingErasure is when the oldest of them was asked for.
	PendingErasures      int       `json:"pending_erasures"`
	OldestPendingErasure time.Time `json:"oldest_pending_erasure,omitzero"`
	// RefusedChanges counts changes read from the log or a journal that
	// were refused as undecodable, unauthenticated or invalid.
	RefusedChanges uint64 `json:"refused_changes"`
}

// Stats returns the engine's current statistics; the zero Stats once the
// engine is closed.
func (e *Engine) Stats() Stats {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed.Load() {
		return Stats{}
	}
	s := Stats{People: e.dir.Len(), Pseudonyms: e.dir.Slots(), Segments: len(e.segs), MemoryBytes: e.dir.SizeBytes() + e.live.SizeBytes(),
		RefusedChanges: e.refused.Load()}
	purged := e.purgedThrough()
	for _, p := range e.pending {
		if p.seq > purged {
			if s.PendingErasures == 0 || p.at.Before(s.OldestPendingErasure) {
				s.OldestPendingErasure = p.at
			}
			s.PendingErasures++
		}
	}
	for _, st := range e.segs {
		s.Memberships += st.len()
		if st.timed != nil {
			for _, b := range st.timed.Epochs() {
				s.MemoryBytes += b.SizeBytes()
			}
		}
		s.MemoryBytes += st.members().SizeBytes()
	}
	for _, ps := range e.purposeByBit {
		s.MemoryBytes += ps.granted.SizeBytes() + ps.denied.SizeBytes() + ps.suppressed.SizeBytes()
	}
	for _, ks := range e.keyGen {
		s.MemoryBytes += ks.SizeBytes()
	}
	for _, c := range e.caps {
		s.CapCounters += int(c.counts.words.Load())
		s.MemoryBytes += uint64(c.counts.bytes())
	}
	return s
}

// IndexStats describes the lookup index's layout: how full its table is
// and how often a lookup reads more than one 64-byte cache line (each line
// beyond the first is one more potential cache miss). The shares assume
// lookups of people drawn uniformly from those stored, and for In a segment
// drawn uniformly from those defined. The privacy-state table and the
// segment table that lookups also read are small and stay cached; they are
// not counted.
//
// The zero IndexStats is a closed engine's; an empty engine's has no Keys
// and zero shares. An IndexStats is a plain value, safe to share between
// goroutines. Engine.IndexStats walks the
// whole table, O(people), under the read lock: it is for diagnostics and
// benchmarks, not for every metrics scrape (Stats is).
type IndexStats struct {
	Slots int     `json:"slots"` // slots in the table, 32 bytes each
	Keys  int     `json:"keys"`  // pseudonyms stored (linked ones each count)
	Load  float64 `json:"load"`  // Keys / Slots
	// Overflow is the share of entries whose segment ids do not fit their
	// slot and live in an overflow record.
	Overflow float64 `json:"overflow"`
	// OffHomeLine is the share of keys stored outside their home slot's
	// cache line, so that their probe reads a second line; ProbeLines is
	// the mean number of lines a probe reads.
	OffHomeLine float64 `json:"off_home_line"`
	ProbeLines  float64 `json:"probe_lines"`
	// SegmentsSecondLine is the share of Segments lookups that read more
	// than one line: off their home line, or with an overflow record.
	SegmentsSecondLine float64 `json:"segments_second_line"`
	// InSecondLine is the share of In lookups that read more than one
	// line: off their home line, or with an overflow record whose inline
	// Bloom filter does not rule the segment out.
	InSecondLine float64 `json:"in_second_line"`
	// ArenaBytes and ArenaGarbage are the overflow records' memory and the
	// part of it replaced records hold until compaction.
	ArenaBytes   uint64 `json:"arena_bytes"`
	ArenaGarbage uint64 `json:"arena_garbage"`
}

// indexStatsFilters bounds the segments whose filters IndexStats tries
// against each overflow entry (evenly spaced among those defined).
const indexStatsFilters = 64

// IndexStats measures the lookup index's layout (see IndexStats); the zero
// IndexStats once the engine is closed.
func (e *Engine) IndexStats() IndexStats {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed.Load() {
		return IndexStats{}
	}
	rt := e.rt.Load()
	var filters []index.Bloom96
	var live []uint32
	for id, st := range rt.segs {
		if st.st != nil {
			live = append(live, uint32(id))
		}
	}
	step := max(1, (len(live)+indexStatsFilters-1)/indexStatsFilters)
	for i := 0; i < len(live); i += step {
		filters = append(filters, rt.segs[live[i]].bloom)
	}
	t := e.dir.Tab.Load()
	l := t.Layout(filters)
	s := IndexStats{Slots: l.Slots, Keys: l.Keys,
		ArenaBytes: t.Arena.SizeBytes(), ArenaGarbage: uint64(max(t.Arena.Garbage, 0))}
	if l.Keys == 0 {
		return s
	}
	keys := float64(l.Keys)
	s.Load = keys / float64(l.Slots)
	s.Overflow = float64(l.Overflow) / keys
	s.OffHomeLine = float64(l.OffHomeLine) / keys
	s.ProbeLines = float64(l.ProbeLines) / keys
	s.SegmentsSecondLine = float64(l.OffHomeLine+l.Overflow-l.OverflowOffHome) / keys
	s.InSecondLine = (float64(l.OffHomeLine) + l.InRecordReadsOnHome) / keys
	return s
}
