package personify

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/wal"
	"github.com/personify-go/personify/segment"
)

// DirInfo is what a durable engine's directory holds, as InspectDir reads
// it without the key: its snapshots and logs, the keys they were written
// under, and the erasures that are durable but not yet physically complete.
// It holds file names, sizes, sequence numbers, times, counts, segment and
// purpose names and key fingerprints: never an identifier, a pseudonym or a
// key.
//
// The zero DirInfo describes an empty directory. A DirInfo is a plain
// value, safe for concurrent reads.
type DirInfo struct {
	Dir       string        `json:"dir"`
	Snapshots []DirSnapshot `json:"snapshots"`
	Logs      []DirLog      `json:"logs"`
	// Temporary lists the files of a snapshot or log that was being written
	// (*.tmp): Open removes them.
	Temporary []string `json:"temporary,omitempty"`
	// Keys are the keys of the newest snapshot's keyring, then those that
	// key rotations logged after it started (fingerprints only).
	Keys []anonymize.KeyInfo `json:"keys"`
	// ReceiptKeys are the Ed25519 public keys (hex) that verify the
	// receipts of erasures stored here, as the newest snapshot lists them.
	ReceiptKeys []string `json:"receipt_keys,omitempty"`
	// Seq is the last log record on disk (or the newest snapshot's, if no
	// log follows it).
	Seq uint64 `json:"seq"`
	// PendingErasures are the erasures that are durable but that some file
	// may still hold: Open or maintenance completes them by their PurgeBy.
	PendingErasures []DirErasure `json:"pending_erasures"`
}

// DirSnapshot describes one snapshot file.
//
// The zero DirSnapshot describes no file. It is a plain value, safe for
// concurrent reads.
type DirSnapshot struct {
	File    string    `json:"file"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mod_time"` // when it was written (the file's time)
	Seq     uint64    `json:"seq"`      // the last log record it includes
	Format  int       `json:"format"`
	People  int       `json:"people"` // people stored (directory entries)
	// Segments and Purposes are the definitions it holds, with the number
	// of members of each segment.
	Segments []DirSegment        `json:"segments"`
	Purposes []string            `json:"purposes"`
	Keys     []anonymize.KeyInfo `json:"keys"`
	Pending  int                 `json:"pending_erasures"` // erasures it lists as not yet physically complete
	Problem  string              `json:"problem,omitempty"`

	sets     map[string]int // set sections and their sizes
	meta     *snapMeta      // nil: the metadata could not be read
	receipts []string       // public receipt keys
	pending  []snapPending  // its pending erasures
	ring     []anonymize.KeyInfo
}

// DirSegment is a segment defined in a snapshot, with its member count.
//
// The zero DirSegment names no segment. It is a plain value, safe for
// concurrent reads.
type DirSegment struct {
	Name      string        `json:"name"`
	Purpose   string        `json:"purpose"`
	Retention time.Duration `json:"retention"`
	Sensitive bool          `json:"sensitive"`
	Members   int           `json:"members"`
}

// DirLog describes one log file.
//
// The zero DirLog describes no file. It is a plain value, safe for
// concurrent reads.
type DirLog struct {
	File    string                `json:"file"`
	Size    int64                 `json:"size"`
	ModTime time.Time             `json:"mod_time"`
	Version int                   `json:"version"` // the log format
	Key     anonymize.Fingerprint `json:"key"`     // the key it was started under
	Start   uint64                `json:"start"`   // the sequence number of its first record
	Frames  int                   `json:"frames"`  // group commits
	Records int                   `json:"records"`
	// First and Last are the sequence numbers of its first and last
	// records (zero when it has none); LastChange is the time of the last.
	First      uint64    `json:"first,omitempty"`
	Last       uint64    `json:"last,omitempty"`
	LastChange time.Time `json:"last_change,omitzero"`
	// Changes counts the records by kind of change ("add", "forget"...).
	Changes map[string]int `json:"changes,omitempty"`
	// TornBytes is the length of a damaged final frame with nothing valid
	// after it in the last log: a crash mid-write, which Open drops.
	TornBytes int64  `json:"torn_bytes,omitempty"`
	Problem   string `json:"problem,omitempty"`

	rotated []anonymize.KeyInfo // the keys rotated to, with the end of the previous key's grace
}

// rotations returns the key rotations the log records, in order.
func (l *DirLog) rotations() []anonymize.KeyInfo { return l.rotated }

// DirErasure is an erasure that is durable but not yet physically complete.
//
// The zero DirErasure describes none. It is a plain value, safe for
// concurrent reads.
type DirErasure struct {
	Seq      uint64    `json:"seq"` // its log position (the receipt's Seq)
	ErasedAt time.Time `json:"erased_at"`
	PurgeBy  time.Time `json:"purge_by"` // the deadline its receipt promises
	File     string    `json:"file"`     // the snapshot or log that records it
}

// The log header's magic strings (a log of an earlier release starts with
// the second).
const inspectLogMagic, inspectLogMagicV1 = wal.LogMagic, wal.LogMagicV1

// InspectDir reads what the durable engine's directory dir holds without
// the key and without opening the engine: it takes no lock, writes
// nothing, and may run beside the engine that has the directory open (a
// file that a compaction removes meanwhile is reported as missing). It
// reads every snapshot's metadata and sets and every log's frames and
// records, checking their checksums.
//
// Damage does not stop it: each damaged file's DirSnapshot or DirLog says
// what is wrong (Problem), and the error, which wraps ErrCorrupt, names
// every damaged file and offset. A torn final frame in the last log is no
// error (Open drops it): TornBytes says how long it is.
func InspectDir(dir string) (DirInfo, error) {
	info := DirInfo{Dir: dir, Snapshots: []DirSnapshot{}, Logs: []DirLog{}, Keys: []anonymize.KeyInfo{}, PendingErasures: []DirErasure{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return info, fmt.Errorf("personify: InspectDir: %w", err)
	}
	var snaps, logs []uint64
	for _, de := range entries {
		name := de.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			info.Temporary = append(info.Temporary, name)
		case inspectSeq(name, "snapshot-", ".pfy") != nil:
			snaps = append(snaps, *inspectSeq(name, "snapshot-", ".pfy"))
		case inspectSeq(name, "log-", ".wal") != nil:
			logs = append(logs, *inspectSeq(name, "log-", ".wal"))
		}
	}
	slices.Sort(snaps)
	slices.Sort(logs)
	var errs []error
	for _, seq := range snaps {
		s, err := inspectSnapshot(filepath.Join(dir, fmt.Sprintf("snapshot-%016x.pfy", seq)), seq)
		if err != nil {
			s.Problem = err.Error()
			errs = append(errs, err)
		}
		info.Snapshots = append(info.Snapshots, s)
	}
	var snapSeq uint64
	if n := len(info.Snapshots); n > 0 {
		newest := info.Snapshots[n-1]
		snapSeq = newest.Seq
		info.Seq = snapSeq
		info.Keys = append(info.Keys, newest.ring...)
		info.ReceiptKeys = newest.receipts
		// The erasures the newest snapshot lists are complete once no
		// older file remains: its compaction removes them last.
		stale := n > 1 || len(logs) > 0 && logs[0] <= snapSeq
		for _, p := range newest.pending {
			if stale {
				info.PendingErasures = append(info.PendingErasures, DirErasure{p.Seq, p.At.UTC(), p.PurgeBy.UTC(), newest.File})
			}
		}
	}
	for i, start := range logs {
		l, pending, err := inspectLog(filepath.Join(dir, fmt.Sprintf("log-%016x.wal", start)), start, i == len(logs)-1)
		if err != nil {
			l.Problem = err.Error()
			errs = append(errs, err)
		}
		info.Logs = append(info.Logs, l)
		info.Seq = max(info.Seq, l.Last)
		for _, p := range pending {
			if !slices.ContainsFunc(info.PendingErasures, func(q DirErasure) bool { return q.Seq == p.Seq }) &&
				(p.Seq > snapSeq || len(info.Snapshots) > 1 || start <= snapSeq) {
				info.PendingErasures = append(info.PendingErasures, p)
			}
		}
		for _, r := range l.rotations() {
			for j := range info.Keys {
				if info.Keys[j].Current {
					info.Keys[j].Current, info.Keys[j].Until = false, r.Until
				}
			}
			info.Keys = append(info.Keys, anonymize.KeyInfo{Fingerprint: r.Fingerprint, Current: true})
		}
	}
	slices.SortFunc(info.PendingErasures, func(a, b DirErasure) int { return a.PurgeBy.Compare(b.PurgeBy) })
	return info, errors.Join(errs...)
}

// inspectSeq returns the sequence number in a snapshot or log file name,
// or nil.
func inspectSeq(name, prefix, suffix string) *uint64 {
	h, ok := strings.CutPrefix(name, prefix)
	if h, ok2 := strings.CutSuffix(h, suffix); ok && ok2 && len(h) == 16 {
		if v, err := strconv.ParseUint(h, 16, 64); err == nil {
			return &v
		}
	}
	return nil
}

// inspectSnapshot reads snapshot file name, whose name says seq.
func inspectSnapshot(name string, seq uint64) (DirSnapshot, error) {
	s := DirSnapshot{File: filepath.Base(name), Seq: seq, Segments: []DirSegment{}, Purposes: []string{}, Keys: []anonymize.KeyInfo{}, sets: map[string]int{}}
	f, err := os.Open(name)
	if err != nil {
		return s, fmt.Errorf("personify: InspectDir: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return s, fmt.Errorf("personify: InspectDir: %w", err)
	}
	s.Size, s.ModTime = fi.Size(), fi.ModTime().UTC()
	return s, s.read(name, io.NewSectionReader(f, 0, fi.Size()))
}

// read reads the snapshot in r, named name, into s.
func (s *DirSnapshot) read(name string, r io.Reader) error {
	sr, err := segment.NewReader(r)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	}
	for {
		sec, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
		}
		switch {
		case sec.Name == snapMetaName && s.meta == nil:
			var m snapMeta
			if err := json.Unmarshal(sec.Blob(), &m); err != nil {
				return corrupt(name, sec.Offset, "metadata: %v", err)
			}
			s.meta = &m
		case sec.Set() != nil:
			s.sets[sec.Name] = sec.Set().Len()
		case sec.Timed() != nil:
			s.sets[sec.Name] = sec.Timed().Len()
		}
	}
	m := s.meta
	if m == nil {
		return fmt.Errorf("%w: %s: the snapshot has no metadata", ErrCorrupt, name)
	}
	s.Format, s.People, s.Pending = m.Format, s.sets["live"], len(m.Pending)
	for _, p := range m.Purposes {
		s.Purposes = append(s.Purposes, p.Name)
	}
	for _, g := range m.Segments {
		s.Segments = append(s.Segments, DirSegment{g.Name, g.Purpose, g.Retention, g.Sensitive, s.sets["segment/"+strconv.FormatUint(uint64(g.ID), 10)]})
	}
	for _, k := range m.Ring {
		s.ring = append(s.ring, anonymize.KeyInfo{Fingerprint: k.Key, Current: k.Current, Until: k.Until})
	}
	s.Keys = append(s.Keys, s.ring...)
	s.receipts, s.pending = m.Receipts, m.Pending
	if m.Seq != s.Seq {
		return corrupt(name, 0, "holds sequence %d, its name says %d", m.Seq, s.Seq)
	}
	return nil
}

// inspectLog reads log file name, whose name says start; last says
// whether it is the newest log (whose torn final frame is no damage). It
// returns the erasures with a deadline that it records.
func inspectLog(name string, start uint64, last bool) (DirLog, []DirErasure, error) {
	l := DirLog{File: filepath.Base(name), Start: start, Changes: map[string]int{}}
	b, err := os.ReadFile(name)
	if err != nil {
		return l, nil, fmt.Errorf("personify: InspectDir: %w", err)
	}
	l.Size = int64(len(b))
	if fi, err := os.Stat(name); err == nil {
		l.ModTime = fi.ModTime().UTC()
	}
	pending, err := l.read(name, b, last)
	return l, pending, err
}

// read reads the log b, named name, into l, and returns the erasures with
// a deadline that it records.
func (l *DirLog) read(name string, b []byte, last bool) ([]DirErasure, error) {
	start := l.Start
	if len(b) >= wal.LogHeaderLen {
		switch string(b[:8]) {
		case inspectLogMagic:
			l.Version = 2
		case inspectLogMagicV1:
			l.Version = 1
		}
		copy(l.Key[:], b[8:16])
	}
	if l.Version == 0 {
		return nil, corrupt(name, 0, "not a personify log header")
	}
	if h := binary.LittleEndian.Uint64(b[16:]); h != start {
		return nil, corrupt(name, 16, "starts at record %d, its name says %d", h, start)
	}
	var pending []DirErasure
	off := wal.LogHeaderLen
	for off < len(b) {
		payload, size, err := wal.DecodeFrame(b[off:])
		if err != nil {
			if last && !inspectValidFrameAfter(b, off+1) {
				l.TornBytes = int64(len(b) - off)
				break
			}
			return pending, corrupt(name, int64(off), "%v", err)
		}
		l.Frames++
		for roff := 0; roff < len(payload); {
			at := int64(off + wal.FrameHeaderLen + roff)
			seq, p, rsize, err := wal.DecodeRecord(payload[roff:])
			if err != nil {
				return pending, corrupt(name, at, "%v", err)
			}
			o, err := decodeChange(p, l.Version)
			if err != nil {
				return pending, corrupt(name, at, "record %d: %v", seq, err)
			}
			if l.Records > 0 && seq != l.Last+1 || l.Records == 0 && seq != start {
				return pending, corrupt(name, at, "record %d follows record %d", seq, max(l.Last, start-1))
			}
			if l.Records == 0 {
				l.First = seq
			}
			l.Records++
			l.Last, l.LastChange = seq, o.at.UTC()
			l.Changes[o.kind.String()]++
			switch {
			case o.kind == opForget && !o.purgeBy.IsZero():
				pending = append(pending, DirErasure{seq, o.at.UTC(), o.purgeBy.UTC(), l.File})
			case o.kind == opRotateKey:
				l.rotated = append(l.rotated, anonymize.KeyInfo{Fingerprint: o.key, Until: o.at.Add(o.grace).UTC()})
			}
			roff += rsize
		}
		off += size
	}
	return pending, nil
}

// inspectValidFrameAfter reports whether a valid frame starts at or after
// off.
func inspectValidFrameAfter(b []byte, off int) bool {
	for ; off+wal.FrameHeaderLen <= len(b); off++ {
		if _, _, err := wal.DecodeFrame(b[off:]); err == nil {
			return true
		}
	}
	return false
}
