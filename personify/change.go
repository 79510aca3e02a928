package personify

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/personify-go/personify/anonymize"
)

// Every change to an engine is an op: a value that holds pseudonyms, names
// and times, never an identifier or a key. The public methods validate
// their arguments, pseudonymize, build an op and commit it; committing
// applies it (in memory) or logs it durably and then applies it (Open).
// Replaying the log after a restart applies the same ops through the same
// code, so a live write and its replay cannot disagree: apply reads the
// time from the op, never from the clock.
type opKind uint8

const (
	opDefinePurpose opKind = iota + 1
	opDefine
	opDrop
	opAdd            // by identifier: every keyed pseudonym of each person
	opAddPseudonyms  // bulk, under the current key (or an alias)
	opRemove         // keyed pseudonyms, one per key, any person
	opConsent        // one person
	opSuppress       // one person; flag: on or off
	opForget         // one person; flag: do not re-add
	opExpire         // at: the time retention is applied at
	opRotateKey      // key: the new key's fingerprint; grace
	opLink           // links: identifiers of one person each; flag: by pseudonym (LinkPseudonyms)
	opUnlink         // one identifier
	opDefineCap      // cap
	opDropCap        // name
	opImpressions    // name: the cap; imps: impressions counted (batched)
	opKindEnd        // one past the last kind
	maxOpPurposeList = MaxPurposes
	maxOpString      = 1 << 20
)

func (k opKind) String() string {
	names := [...]string{"", "define-purpose", "define", "drop", "add", "add-pseudonyms", "remove",
		"consent", "suppress", "forget", "expire", "rotate-key", "link", "unlink",
		"define-cap", "drop-cap", "impressions"}
	if k == 0 || k >= opKindEnd {
		return fmt.Sprintf("op(%d)", uint8(k))
	}
	return names[k]
}

type op struct {
	kind    opKind
	at      time.Time // when the change was asked for; apply uses it as "now"
	name    string    // segment (define, drop, add, remove) or purpose (consent)
	purpose Purpose   // define-purpose
	seg     Segment   // define
	people  [][]anonymize.KeyedPseudonym
	ps      []anonymize.Pseudonym      // add-pseudonyms
	names   []string                   // suppress: purposes (none: every purpose)
	flag    bool                       // consent: granted; suppress: on; forget: do not re-add
	key     anonymize.Fingerprint      // rotate-key
	grace   time.Duration              // rotate-key
	purgeBy time.Time                  // forget: the deadline its receipt promises for physical erasure (zero in memory)
	also    []anonymize.KeyedPseudonym // forget with do-not-re-add: the person's pseudonyms under keys not in use yet (UpcomingKeys)
	links   [][]linkID                 // link: per person, the identifiers joined
	cap     Cap                        // define-cap
	imps    []impression               // impressions

	// Not logged.
	next    anonymize.Key // rotate-key: the key itself, from the caller or Options
	receipt string        // forget: the receipt's id, for the audit event
	seq     uint64        // the op's position in the log or journal, set before it is applied (zero in memory)
	self    bool          // impressions: this engine's own, counted already
	version int           // the record format it was decoded from (recVersion for live changes)
}

// opResult is what applying an op reports back to its caller.
type opResult struct {
	n      int                   // add: added; expire: dropped
	erased erased                // forget
	key    anonymize.Fingerprint // forget: the current key when it was applied
	seq    uint64                // the op's log sequence number (durable engines)
}

// sizeBound is an upper bound of the length of o's record body, computed
// without encoding it.
func (o *op) sizeBound() int {
	const varint = binary.MaxVarintLen64
	n := 8 + 1 + 8 + 8 + 8 + varint // seq, kind, at; grace/retention and a count
	n += 4*varint + len(o.name) + len(o.purpose.Name) + len(o.purpose.Description) +
		len(o.seg.Name) + len(o.seg.Purpose) + len(o.seg.Description)
	for _, kps := range o.people {
		n += varint + 16*len(kps)
	}
	n += varint + 16*len(o.also)
	for _, g := range o.links {
		n += varint
		for _, id := range g {
			n += 1 + varint + 16*len(id.kps)
		}
	}
	n += 8 * len(o.ps)
	n += 16*len(o.imps) + len(o.cap.Name) + len(o.cap.Purpose) + len(o.cap.Description) + len(o.cap.Window.TimeZone) + 4*varint
	for _, name := range o.names {
		n += varint + len(name)
	}
	return n
}

// checkSize refuses a change whose record could pass maxRecordLen,
// before anything is encoded or logged.
func (o *op) checkSize() error {
	if n := o.sizeBound(); n > maxRecordLen {
		return fmt.Errorf("%w: a %s change of up to %d bytes is over the log's limit of %d bytes: split it", errWrite, o.kind, n, maxRecordLen)
	}
	return nil
}

// person returns the one person of a single-person op.
func (o *op) person() []anonymize.KeyedPseudonym {
	if len(o.people) == 0 {
		return nil
	}
	return o.people[0]
}
