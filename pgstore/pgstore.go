// Package pgstore runs a fleet of personify engines (service replicas) on
// one PostgreSQL database: segments, consent, suppressions and erasures
// written on any replica reach every replica within a poll interval
// (usually milliseconds: LISTEN/NOTIFY wakes them).
//
// Start with Open, which returns a Replica: the API of a personify engine
// (replica.Replica's) whose writes go through a journal in PostgreSQL. Every change gets a sequence number
// from the database and every replica applies every change exactly once,
// in that order, across reconnects and restarts; a replica that falls
// behind catches up from the journal, or from the newest snapshot when
// compaction has removed what it missed.
//
//	r, err := pgstore.Open(ctx, "host=/run/postgresql dbname=app", pgstore.Options{
//		Engine: personify.Options{Key: key},
//	})
//	defer r.Close()
//	r.Add("runners", anonymize.Email(email))               // any replica
//	p, _ := r.Pseudonym(anonymize.Email(email))
//	names := r.Segments(nil, p, "personalization")          // local, lock-free
//
// The tables (created and migrated by Open, versioned in
// personify_schema) hold pseudonyms, names and times: never an identifier,
// a key or any other secret. The key's fingerprint is recorded and checked
// when a replica connects. Compaction writes a snapshot and deletes the
// journal rows and older snapshots it covers, so that a Forget leaves the
// database (then VACUUM reclaims the space) by the time its receipt says.
//
// The database is trusted to store, not to decide. Every journal row and
// every snapshot carries an HMAC-SHA256 tag under a subkey derived from
// the fleet's key, bound to its position; a row that fails it, does not
// decode, or that the local API would refuse is skipped by every replica
// alike (counted in Status, logged as an audit event), so that whoever can
// write the tables but lacks the key can neither inject a change (an
// erasure, a rotation, a definition) nor stop the fleet with one bad row.
// Each replica records the fingerprints of the keys it holds in
// personify_replicas, and RotateKey refuses while a live replica lacks the
// new key.
package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/personify-go/personify/personify"
	"github.com/personify-go/personify/personify/replica"
)

// Options configures a replica.
//
// The zero value is not usable: Engine.Key is required; every other field has
// a default. It is a plain value, read once by Open, safe for concurrent
// reads.
type Options struct {
	// Engine configures the replica's engine (Key is required). Its Durable
	// settings are not used: the database is the storage.
	Engine personify.Options `json:"engine"`
	// PollInterval is how often a replica checks for changes when no
	// notification arrives (a lost notification, a dropped connection).
	// Zero means one second.
	PollInterval time.Duration `json:"poll_interval"`
	// CompactAfter is the number of journal rows after which maintenance
	// writes a snapshot and deletes them. Zero means 100,000.
	CompactAfter int `json:"compact_after"`
	// MaintenanceInterval is how often maintenance runs: retention
	// (Expire, on one replica of the fleet at a time) and compaction. Zero
	// means one minute; negative turns it off.
	MaintenanceInterval time.Duration `json:"maintenance_interval"`
	// PurgeWithin is the deadline erasure receipts promise for physical
	// deletion; maintenance compacts within a quarter of it after a Forget.
	// Zero means one minute.
	PurgeWithin time.Duration `json:"purge_within"`
	// WriteTimeout bounds a write: the journal's transaction, and the wait
	// for this replica to apply the change (replica.Options.WriteTimeout;
	// a context's deadline can shorten the wait). Zero means 30 seconds.
	WriteTimeout time.Duration `json:"write_timeout"`
	// Logger receives warnings (reconnects, failed maintenance). Nil
	// discards them.
	Logger *slog.Logger `json:"-"`
}

// Replica is a personify engine that shares its state with the other
// replicas on the same database. Lookups are local and lock-free, as with
// personify.New; writes are appended to the database's journal and return
// once this replica applied them. Its methods are the engine's API (those
// of replica.Replica: In, Segments, Add, Forget and the rest, documented
// there) and the fleet's (Sync, Compact, Status, Close): none can load a
// state or apply a change that did not come from the journal, so none can
// split a replica from its fleet. A Replica is safe for concurrent use;
// its zero value is not usable: call Open.
type Replica struct {
	*replicaAPI               // the engine's API: lookups, reads, and writes through the journal
	feed        *replica.Feed // the journal reader's side: changes and snapshots reach the engine only here
	pool        *pgxpool.Pool
	opts        Options
	log         *slog.Logger

	id      int64 // this replica's row in personify_replicas
	purged  atomic.Uint64
	kick    chan struct{}
	pmu     sync.Mutex
	purgeBy time.Time   // earliest compaction asked for by an erasure (zero: none)
	beat    time.Time   // last heartbeat written (follow's goroutine only)
	silent  atomic.Bool // tests: write no more heartbeats

	// The journal reader's memory of what it applied, to notice the
	// database rewriting it: the tag of the last change applied (nil:
	// unknown, after a snapshot), and snapshots whose tag failed.
	lastSeq   uint64
	lastTag   []byte
	badSnaps  map[int64]bool
	rewritten atomic.Pointer[error] // set when the journal went back or changed under the replica

	amu          sync.Mutex // the append batch being filled, and whether one is being written
	acond        *sync.Cond
	pendingBatch *appendBatch
	writing      bool
	batches      sync.WaitGroup // batches being written

	bg     context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// replicaAPI embeds replica.Replica's methods in Replica without a field
// that could be read or replaced from outside the package.
type replicaAPI = replica.Replica

// liveWindow is how recently a replica must have written its heartbeat to
// count as live for RotateKey's check.
func (r *Replica) liveWindow() time.Duration { return max(5*r.opts.PollInterval, 5*time.Second) }

// ErrJournalDamaged is wrapped by the errors of a replica that finds the
// fleet's journal damaged: rows missing that no authenticated snapshot
// covers, or the journal rolled back or rewritten under changes it had
// applied. Such a replica stops following the journal and refuses writes
// (Status.Stalled) rather than diverge from the fleet.
var ErrJournalDamaged = errors.New("pgstore: the fleet's journal is damaged")

// ErrWrongKey is personify.ErrWrongKey: the database holds data written
// under another key.
var ErrWrongKey = personify.ErrWrongKey

// Open connects to the database, creates or migrates the schema, checks
// the key, loads the newest snapshot and the journal after it, and starts
// following the journal. It returns once the replica is current.
func Open(ctx context.Context, connString string, opts Options) (*Replica, error) {
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.CompactAfter <= 0 {
		opts.CompactAfter = 100_000
	}
	if opts.MaintenanceInterval == 0 {
		opts.MaintenanceInterval = time.Minute
	}
	if opts.PurgeWithin <= 0 {
		opts.PurgeWithin = time.Minute
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	if opts.PurgeWithin > 30*24*time.Hour {
		return nil, fmt.Errorf("pgstore: Options.PurgeWithin is %v: an erasure's physical deletion can be promised for at most 30 days", opts.PurgeWithin)
	}
	if opts.Engine.Key.IsZero() {
		return nil, errors.New("pgstore: Options.Engine.Key is required")
	}
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("pgstore: connection string: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: connect: %w", err)
	}
	r := &Replica{pool: pool, opts: opts, log: opts.Logger, kick: make(chan struct{}, 1), id: randomID(), badSnaps: map[int64]bool{}}
	r.acond = sync.NewCond(&r.amu)
	r.bg, r.cancel = context.WithCancel(context.Background()) // the follower's, maintenance's and batches' context: Close cancels it
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	fail := func(err error) (*Replica, error) {
		r.cancel()
		pool.Close()
		return nil, err
	}
	if err := migrate(ctx, pool, opts.Engine.Key.Fingerprint()); err != nil {
		return fail(err)
	}
	if err := r.checkKey(ctx); err != nil {
		return fail(err)
	}
	e, feed, err := replica.New(opts.Engine, (*journal)(r), replica.Options{WriteTimeout: opts.WriteTimeout})
	if err != nil {
		return fail(err)
	}
	r.replicaAPI, r.feed = e, feed
	if err := r.heartbeat(ctx, pool); err != nil {
		e.Close()
		return fail(err)
	}
	if err := r.loadSnapshot(ctx); err != nil {
		r.leave()
		e.Close()
		return fail(err)
	}
	if err := r.catchUp(ctx, pool); err != nil {
		r.leave()
		e.Close()
		return fail(err)
	}
	var purged int64
	if err := pool.QueryRow(ctx, `SELECT purged FROM personify_meta WHERE id = 1`).Scan(&purged); err == nil {
		r.purged.Store(uint64(purged))
	}
	r.wg.Go(func() { r.follow(r.bg) })
	if opts.MaintenanceInterval > 0 {
		r.wg.Go(func() { r.maintain(r.bg) })
	}
	return r, nil
}

// checkKey refuses a database written under a key the replica was not
// given.
func (r *Replica) checkKey(ctx context.Context) error {
	var stored string
	if err := r.pool.QueryRow(ctx, `SELECT key_fingerprint FROM personify_meta WHERE id = 1`).Scan(&stored); err != nil {
		return fmt.Errorf("pgstore: read the key fingerprint: %w", err)
	}
	given := []string{r.opts.Engine.Key.Fingerprint().String()}
	for _, pk := range r.opts.Engine.PreviousKeys {
		given = append(given, pk.Key.Fingerprint().String())
	}
	for _, k := range r.opts.Engine.UpcomingKeys { // the fleet may have rotated to it already
		given = append(given, k.Fingerprint().String())
	}
	for _, g := range given {
		if g == stored {
			return nil
		}
	}
	return fmt.Errorf("%w: the database's data is under key %s; this replica was given %v: use the fleet's key", ErrWrongKey, stored, given)
}

// Status is where a replica stands: its engine's journal position, the
// rows it refused, whether it is stalled (a rotation to a key it lacks),
// and how far the fleet's storage is purged.
//
// The zero Status is a replica's that has applied nothing. A Status is a
// plain value, a copy taken at one moment, safe to share between goroutines.
type Status struct {
	replica.Status
	PurgedThrough uint64 `json:"purged_through"`
}

// Status returns the replica's status. Stalled is also set when the
// database rewrote the journal under the replica (its head went back, or a
// row it applied changed): it stops applying the journal and refuses
// writes until restarted.
func (r *Replica) Status() Status {
	st := Status{Status: r.feed.Status(), PurgedThrough: r.purged.Load()}
	if st.Stalled == nil {
		st.Stalled = r.stalled()
	}
	return st
}

// Close stops following the journal and closes the engine and the
// connections. Writes acknowledged before are in the database.
func (r *Replica) Close() error {
	if !r.closed.Load() {
		// The impressions the frequency caps counted here reach the
		// journal while it still takes appends.
		ctx, cancel := context.WithTimeout(context.Background(), r.opts.WriteTimeout)
		_ = r.replicaAPI.FlushCounts(ctx)
		cancel()
	}
	r.amu.Lock() // Append checks closed under amu: no batch starts after this
	already := r.closed.Swap(true)
	r.amu.Unlock()
	if already {
		return nil
	}
	r.cancel()
	r.wg.Wait()
	r.batches.Wait()
	r.leave()
	err := r.replicaAPI.Close()
	r.pool.Close()
	return err
}

func randomID() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.LittleEndian.Uint64(b[:]) >> 1)
}
