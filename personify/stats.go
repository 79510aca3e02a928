package personify

import "time"

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
