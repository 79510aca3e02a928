// Package pgstore runs a fleet of personify engines (service replicas) on
// one PostgreSQL database: segments, consent, suppressions and erasures
// written on any replica reach every replica within a poll interval
// (usually milliseconds: LISTEN/NOTIFY wakes them).
//
// Start with Open, which returns a Replica: a personify.Engine whose writes
// go through a journal in PostgreSQL. Every change gets a sequence number
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
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
	"github.com/personify-go/personify/personify/replica"
)

// Options configures a replica.
type Options struct {
	// Engine configures the replica's engine (Key is required). Its Durable
	// settings are not used: the database is the storage.
	Engine personify.Options
	// PollInterval is how often a replica checks for changes when no
	// notification arrives (a lost notification, a dropped connection).
	// Zero means one second.
	PollInterval time.Duration
	// CompactAfter is the number of journal rows after which maintenance
	// writes a snapshot and deletes them. Zero means 100,000.
	CompactAfter int
	// MaintenanceInterval is how often maintenance runs: retention
	// (Expire, on one replica of the fleet at a time) and compaction. Zero
	// means one minute; negative turns it off.
	MaintenanceInterval time.Duration
	// PurgeWithin is the deadline erasure receipts promise for physical
	// deletion; maintenance compacts within a quarter of it after a Forget.
	// Zero means one minute.
	PurgeWithin time.Duration
	// Logger receives warnings (reconnects, failed maintenance). Nil
	// discards them.
	Logger *slog.Logger
}

// Replica is a personify engine that shares its state with the other
// replicas on the same database. Lookups are local and lock-free, as with
// personify.New; writes are appended to the database's journal and return
// once this replica applied them. Its methods are the engine's API
// (replica.Replica) and the fleet's (Sync, Compact, Status, Close): none
// can load a state or apply a change that did not come from the journal,
// so none can split a replica from its fleet.
type Replica struct {
	*replica.Replica               // the engine's API: lookups, reads, and writes through the journal
	feed             *replica.Feed // the journal reader's side: changes and snapshots reach the engine only here
	pool             *pgxpool.Pool
	opts             Options
	log              *slog.Logger

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

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// The schema, one migration per version.
var migrations = []string{
	1: `
CREATE TABLE personify_meta (
	id              int PRIMARY KEY CHECK (id = 1),
	key_fingerprint text NOT NULL,   -- the key the data is written under (public name, not the key)
	seq             bigint NOT NULL, -- last sequence number handed out
	purged          bigint NOT NULL DEFAULT 0, -- journal rows up to here are deleted
	last_expire     timestamptz NOT NULL DEFAULT '-infinity' -- when a replica last applied retention
);
CREATE TABLE personify_journal (
	seq    bigint PRIMARY KEY,
	change bytea NOT NULL,
	at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE personify_snapshots (
	seq  bigint PRIMARY KEY,
	data bytea NOT NULL,
	at   timestamptz NOT NULL DEFAULT now()
);`,
	// Version 2: authenticated rows (journal changes of version 1 carry no
	// tag and are refused), snapshot tags, and the replicas' key
	// fingerprints.
	2: `
ALTER TABLE personify_snapshots ADD COLUMN tag bytea;
CREATE TABLE personify_replicas (
	id      bigint PRIMARY KEY,            -- a random id per running replica
	keys    text[] NOT NULL,               -- fingerprints of the keys it holds (public names, not keys)
	applied bigint NOT NULL DEFAULT 0,     -- the last change it applied
	seen    timestamptz NOT NULL DEFAULT now()
);`,
}

const (
	channel       = "personify_journal"
	lockMigrate   = 0x70657273 // advisory lock ids ("pers"...)
	lockCompact   = 0x70657274
	maxFetchBatch = 5000
)

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
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	fail := func(err error) (*Replica, error) {
		pool.Close()
		return nil, err
	}
	if err := migrate(ctx, pool, opts.Engine.Key.Fingerprint()); err != nil {
		return fail(err)
	}
	if err := r.checkKey(ctx); err != nil {
		return fail(err)
	}
	e, feed, err := replica.New(opts.Engine, (*journal)(r), replica.Options{})
	if err != nil {
		return fail(err)
	}
	r.Replica, r.feed = e, feed
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
	bg, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Go(func() { r.follow(bg) })
	if opts.MaintenanceInterval > 0 {
		r.wg.Go(func() { r.maintain(bg) })
	}
	return r, nil
}

// migrate creates or upgrades the schema, one replica at a time.
func migrate(ctx context.Context, pool *pgxpool.Pool, fp anonymize.Fingerprint) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockMigrate); err != nil {
			return fmt.Errorf("pgstore: migrate: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS personify_schema (version int NOT NULL)`); err != nil {
			return fmt.Errorf("pgstore: migrate: %w", err)
		}
		var version int
		err := tx.QueryRow(ctx, `SELECT version FROM personify_schema`).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			_, err = tx.Exec(ctx, `INSERT INTO personify_schema (version) VALUES (0)`)
		}
		if err != nil {
			return fmt.Errorf("pgstore: migrate: %w", err)
		}
		if version > len(migrations)-1 {
			return fmt.Errorf("pgstore: the database has schema version %d, this version of pgstore knows up to %d: upgrade pgstore", version, len(migrations)-1)
		}
		for v := version + 1; v < len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("pgstore: migrate to version %d: %w", v, err)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE personify_schema SET version = $1`, len(migrations)-1); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO personify_meta (id, key_fingerprint, seq) VALUES (1, $1, 0) ON CONFLICT DO NOTHING`, fp.String())
		return err
	})
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

// loadSnapshot loads the newest snapshot newer than what the replica
// applied, if any, after checking its tag: a snapshot row that someone
// without the key wrote or altered, or one past the journal's head, is
// skipped (and remembered), never loaded.
func (r *Replica) loadSnapshot(ctx context.Context) error {
	rows, err := r.pool.Query(ctx, `SELECT seq FROM personify_snapshots
		WHERE seq > $1 AND seq <= (SELECT seq FROM personify_meta WHERE id = 1) ORDER BY seq DESC`, int64(r.feed.Applied()))
	if err != nil {
		return fmt.Errorf("pgstore: read the snapshots: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("pgstore: read the snapshots: %w", err)
	}
	for _, seq := range seqs {
		if r.badSnaps[seq] {
			continue
		}
		var data, tag []byte
		err := r.pool.QueryRow(ctx, `SELECT data, tag FROM personify_snapshots WHERE seq = $1`, seq).Scan(&data, &tag)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // removed by a compaction meanwhile
		}
		if err != nil {
			return fmt.Errorf("pgstore: read snapshot %d: %w", seq, err)
		}
		err = r.feed.LoadSnapshot(uint64(seq), data, tag)
		if errors.Is(err, personify.ErrInvalidChange) {
			r.badSnaps[seq] = true
			r.log.Warn("pgstore: a snapshot row fails authentication and is skipped", "seq", seq, "error", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("pgstore: snapshot %d: %w", seq, err)
		}
		r.lastSeq, r.lastTag = uint64(seq), nil
		return nil
	}
	return nil
}

// querier is a pool or a connection.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// catchUp applies every journal row after Applied. A gap (rows removed by a
// compaction this replica had not reached) loads the newest snapshot.
func (r *Replica) catchUp(ctx context.Context, q querier) error {
	for {
		n, gap, err := r.fetch(ctx, q)
		if err != nil {
			return err
		}
		if gap {
			before := r.feed.Applied()
			if err := r.loadSnapshot(ctx); err != nil {
				return err
			}
			if r.feed.Applied() == before {
				return fmt.Errorf("%w: rows after %d are missing and no snapshot that verifies covers them", ErrJournalDamaged, before)
			}
			continue
		}
		if n < maxFetchBatch {
			return nil
		}
	}
}

func (r *Replica) fetch(ctx context.Context, q querier) (n int, gap bool, err error) {
	if err := r.stalled(); err != nil {
		return 0, false, err
	}
	rows, err := q.Query(ctx, `SELECT seq FROM personify_meta WHERE id = 1`)
	if err != nil {
		return 0, false, fmt.Errorf("pgstore: read the journal: %w", err)
	}
	head, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, false, fmt.Errorf("pgstore: read the journal: %w", err)
	}
	if uint64(head) < r.feed.Applied() {
		return 0, false, r.rewrite(fmt.Errorf("%w: its head went back from %d to %d: the database lost or rolled back changes this replica applied", ErrJournalDamaged, r.feed.Applied(), head))
	}
	n, gap, err = r.fetchRows(ctx, q, head)
	if err != nil || gap || n > 0 {
		return n, gap, err
	}
	// Nothing after Applied: either this replica is current, or a
	// compaction deleted the rows it had not read and nothing was written
	// since. A newer snapshot (within the journal's head, not known to be
	// forged) tells which.
	rows, err = q.Query(ctx, `SELECT seq FROM personify_snapshots WHERE seq > $1 AND seq <= $2`, int64(r.feed.Applied()), head)
	if err != nil {
		return 0, false, fmt.Errorf("pgstore: read the journal: %w", err)
	}
	newer, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, false, fmt.Errorf("pgstore: read the journal: %w", err)
	}
	for _, s := range newer {
		if !r.badSnaps[s] {
			return 0, true, nil
		}
	}
	if uint64(head) > r.feed.Applied() {
		return 0, false, fmt.Errorf("%w: rows %d to %d are missing and no snapshot that verifies covers them (the database lost changes, or holds forged snapshots)", ErrJournalDamaged, r.feed.Applied()+1, head)
	}
	return 0, false, nil
}

// rewrite records that the database changed the journal under the
// replica: it stops applying it and refuses writes (Status says why).
func (r *Replica) rewrite(err error) error {
	r.rewritten.CompareAndSwap(nil, &err)
	return err
}

// stalled returns why the replica stopped following the journal, if it did.
func (r *Replica) stalled() error {
	if p := r.rewritten.Load(); p != nil {
		return *p
	}
	return nil
}

// fetchRows applies the journal rows after Applied, up to the head: rows
// past the head are not committed positions (only someone writing the
// table directly makes them) and are never read. The row at Applied, if
// still there, must be the one applied.
func (r *Replica) fetchRows(ctx context.Context, q querier, head int64) (n int, gap bool, err error) {
	rows, err := q.Query(ctx, `SELECT seq, change FROM personify_journal WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3`,
		int64(r.feed.Applied()), head, maxFetchBatch+1)
	if err != nil {
		return 0, false, fmt.Errorf("pgstore: read the journal: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var change []byte
		if err := rows.Scan(&seq, &change); err != nil {
			return n, false, err
		}
		if uint64(seq) <= r.feed.Applied() {
			if uint64(seq) == r.lastSeq && r.lastTag != nil && !bytes.Equal(tagOf(change), r.lastTag) {
				return n, false, r.rewrite(fmt.Errorf("%w: row %d is not the change this replica applied there: the database rewrote the journal", ErrJournalDamaged, seq))
			}
			continue
		}
		// A row that does not decode, fails authentication or is invalid
		// is refused inside Apply (which returns nil): it never stops the
		// fleet.
		if err := r.feed.Apply(uint64(seq), change); err != nil {
			if errors.Is(err, replica.ErrGap) {
				return n, true, nil
			}
			return n, false, fmt.Errorf("pgstore: journal row %d: %w", seq, err)
		}
		r.lastSeq, r.lastTag = uint64(seq), bytes.Clone(tagOf(change))
		n++
	}
	return n, false, rows.Err()
}

// tagOf returns a change's authentication tag (its last 32 bytes).
func tagOf(change []byte) []byte { return change[len(change)-min(len(change), 32):] }

// follow applies the journal as it grows: it waits for a notification (or
// the poll interval), then reads what is new, and reconnects after any
// error, until the replica is closed.
func (r *Replica) follow(ctx context.Context) {
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		err := r.followConn(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, personify.ErrKeyUnavailable) || r.stalled() != nil {
			r.log.Error("pgstore: replica stalled: it stops applying the journal and refuses writes until restarted with the key", "error", err)
			backoff = 2 * time.Second
		} else {
			r.log.Warn("pgstore: journal connection lost; reconnecting", "error", err, "after", backoff)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (r *Replica) followConn(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, r.pool.Config().ConnConfig)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return err
	}
	for {
		if err := r.catchUp(ctx, conn); err != nil {
			return err
		}
		var purged int64
		if err := conn.QueryRow(ctx, `SELECT purged FROM personify_meta WHERE id = 1`).Scan(&purged); err != nil {
			return err
		}
		r.purged.Store(max(r.purged.Load(), uint64(purged)))
		if time.Since(r.beat) >= r.opts.PollInterval/2 && !r.silent.Load() {
			if err := r.heartbeat(ctx, conn); err != nil {
				return err
			}
		}
		wctx, cancel := context.WithTimeout(ctx, r.opts.PollInterval)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
			return err
		}
	}
}

// Sync waits until this replica has applied every change in the journal
// at the time of the call: after it, the replica reflects every write any
// replica acknowledged before. It retries while the database is
// unreachable, until ctx ends.
func (r *Replica) Sync(ctx context.Context) error {
	var head int64
	for { // retried: a connection the server dropped fails once
		err := r.pool.QueryRow(ctx, `SELECT seq FROM personify_meta WHERE id = 1`).Scan(&head)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgstore: sync: %w", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for r.feed.Applied() < uint64(head) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgstore: sync: applied %d of %d: %w", r.feed.Applied(), head, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// journal is the replica.Journal of a Replica.
type journal Replica

// Append stores a change. Concurrent appends are batched: one goroutine
// writes every change queued meanwhile in one transaction, so that they
// share the database's commit flush (group commit), while the appenders
// wait for its outcome. The sequence numbers come from the meta row, whose
// lock orders the transactions, so numbers commit in order and without
// gaps; the notification wakes the other replicas at commit.
//
// The batch's transaction belongs to none of its appenders: one whose
// context ends stops waiting (replica.ErrNotApplied: its change may still
// be stored), and the others' changes are written all the same, within
// appendTimeout.
func (j *journal) Append(ctx context.Context, change []byte, seal func(uint64, []byte) []byte) (uint64, error) {
	if err := (*Replica)(j).stalled(); err != nil {
		return 0, err
	}
	j.amu.Lock()
	if j.closed.Load() {
		j.amu.Unlock()
		return 0, personify.ErrClosed
	}
	b := j.pendingBatch
	if b == nil { // start a batch; later appends join it until it is taken
		b = &appendBatch{done: make(chan struct{})}
		j.pendingBatch = b
		j.batches.Add(1)
		go j.writeBatch(context.WithoutCancel(ctx), b)
	}
	idx := len(b.changes)
	b.changes = append(b.changes, change)
	b.seals = append(b.seals, seal)
	j.amu.Unlock()
	select {
	case <-b.done:
		if b.err != nil {
			return 0, b.err
		}
		return b.first + uint64(idx), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: pgstore: the journal's write did not finish in time, and the change may still be stored: %w", replica.ErrNotApplied, ctx.Err())
	}
}

// appendTimeout bounds one batch's transaction.
const appendTimeout = 30 * time.Second

// writeBatch waits for the batch in flight, takes b (later appends start
// the next batch) and writes it.
func (j *journal) writeBatch(ctx context.Context, b *appendBatch) {
	defer j.batches.Done()
	j.amu.Lock()
	for j.writing { // one batch in flight at a time; b fills meanwhile
		j.acond.Wait()
	}
	j.writing = true
	j.pendingBatch = nil
	changes, seals := b.changes, b.seals
	j.amu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, appendTimeout)
	b.first, b.err = j.write(ctx, changes, seals)
	cancel()
	close(b.done)
	j.amu.Lock()
	j.writing = false
	j.acond.Broadcast()
	j.amu.Unlock()
}

type appendBatch struct {
	changes [][]byte
	seals   []func(uint64, []byte) []byte
	done    chan struct{}
	first   uint64
	err     error
}

// write appends changes in one transaction and returns the first's
// sequence number. Each change is sealed (authenticated together with its
// number) once the number is known, inside the transaction.
func (j *journal) write(ctx context.Context, changes [][]byte, seals []func(uint64, []byte) []byte) (uint64, error) {
	var last int64
	err := pgx.BeginFunc(ctx, j.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `UPDATE personify_meta SET seq = seq + $1 WHERE id = 1 RETURNING seq`, len(changes)).Scan(&last); err != nil {
			return err
		}
		first := last - int64(len(changes)) + 1
		// Rows past the old head are not committed positions: only someone
		// writing the table directly makes them. They go, so that they can
		// neither take this batch's numbers nor be read as changes.
		if _, err := tx.Exec(ctx, `DELETE FROM personify_journal WHERE seq >= $1`, first); err != nil {
			return err
		}
		sealed := make([][]byte, len(changes))
		for i, c := range changes {
			sealed[i] = seals[i](uint64(first)+uint64(i), bytes.Clone(c))
		}
		if _, err := tx.Exec(ctx, `INSERT INTO personify_journal (seq, change)
			SELECT $1 + ord - 1, c FROM unnest($2::bytea[]) WITH ORDINALITY AS t(c, ord)`, first, sealed); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, strconv.FormatInt(last, 10))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("pgstore: append to the journal: %w", err)
	}
	return uint64(last) - uint64(len(changes)) + 1, nil
}

// PurgedThrough, PurgeWithin and SchedulePurge implement personify.Purger.
func (j *journal) PurgedThrough() uint64      { return j.purged.Load() }
func (j *journal) PurgeWithin() time.Duration { return j.opts.PurgeWithin }
func (j *journal) SchedulePurge(by time.Time) {
	j.pmu.Lock()
	if j.purgeBy.IsZero() || by.Before(j.purgeBy) {
		j.purgeBy = by
	}
	j.pmu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// CheckKey implements personify.KeyChecker: it refuses a rotation to key fp
// while a live replica (one whose heartbeat is recent) does not hold it.
func (j *journal) CheckKey(ctx context.Context, fp anonymize.Fingerprint) error {
	r := (*Replica)(j)
	var lacking, live int
	err := r.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE NOT ($1 = ANY(keys))), count(*)
		FROM personify_replicas WHERE seen > now() - make_interval(secs => $2)`,
		fp.String(), r.liveWindow().Seconds()).Scan(&lacking, &live)
	if err != nil {
		return fmt.Errorf("pgstore: check the replicas' keys: %w", err)
	}
	if lacking > 0 {
		return fmt.Errorf("%d of the fleet's %d live replicas lack key %s: give every replica the new key in Options.UpcomingKeys (and restart it) first", lacking, live, fp)
	}
	return nil
}

// heartbeat records this replica in personify_replicas: the keys it holds
// and how far it has applied the journal.
func (r *Replica) heartbeat(ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}) error {
	st := r.feed.Status()
	keys := make([]string, len(st.Keys))
	for i, fp := range st.Keys {
		keys[i] = fp.String()
	}
	_, err := q.Exec(ctx, `INSERT INTO personify_replicas (id, keys, applied, seen) VALUES ($1, $2, $3, now())
		ON CONFLICT (id) DO UPDATE SET keys = excluded.keys, applied = excluded.applied, seen = now()`,
		r.id, keys, int64(st.Applied))
	if err != nil {
		return fmt.Errorf("pgstore: heartbeat: %w", err)
	}
	r.beat = time.Now()
	return nil
}

// leave removes this replica's row, so that a rotation does not wait for it.
func (r *Replica) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = r.pool.Exec(ctx, `DELETE FROM personify_replicas WHERE id = $1`, r.id)
}

func randomID() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.LittleEndian.Uint64(b[:]) >> 1)
}

// Status is where a replica stands: its engine's journal position, the
// rows it refused, whether it is stalled (a rotation to a key it lacks),
// and how far the fleet's storage is purged.
type Status struct {
	replica.Status
	PurgedThrough uint64
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

// Compact writes a snapshot of this replica at the sequence number it has
// applied, then deletes the journal rows and older snapshots it covers, in
// one transaction (one replica at a time), and vacuums the two tables so
// that deleted rows leave the disk. Maintenance calls it by itself.
func (r *Replica) Compact(ctx context.Context) error {
	// Serializing the whole state is the expensive part: skip it when the
	// newest snapshot already holds everything this replica has applied
	// and its rows are purged (the transaction below checks again).
	var newest, purged int64
	if err := r.pool.QueryRow(ctx, `SELECT coalesce((SELECT max(seq) FROM personify_snapshots), 0), purged
		FROM personify_meta WHERE id = 1`).Scan(&newest, &purged); err != nil {
		return fmt.Errorf("pgstore: compact: %w", err)
	}
	if uint64(newest) >= r.feed.Applied() && purged >= newest {
		r.purged.Store(max(r.purged.Load(), uint64(purged)))
		return nil
	}
	var buf bytes.Buffer
	seq, _, err := r.feed.WriteSnapshot(&buf)
	if err != nil {
		return fmt.Errorf("pgstore: compact: %w", err)
	}
	var locked bool
	var covered int64 // rows up to here are deleted once the transaction commits: by this one, or by a verified snapshot's
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, lockCompact).Scan(&locked); err != nil || !locked {
			return err // another replica is compacting
		}
		// The newest snapshot within the journal's head covers the rows up
		// to it only if its tag verifies: a row someone wrote without the
		// key is dropped here, not trusted.
		for {
			var newest int64
			var data, tag []byte
			err := tx.QueryRow(ctx, `SELECT seq, data, tag FROM personify_snapshots
				WHERE seq <= (SELECT seq FROM personify_meta WHERE id = 1) ORDER BY seq DESC LIMIT 1`).Scan(&newest, &data, &tag)
			if errors.Is(err, pgx.ErrNoRows) {
				break
			}
			if err != nil {
				return err
			}
			if newest < int64(seq) {
				break
			}
			if r.feed.VerifySnapshot(uint64(newest), data, tag) == nil {
				covered = newest
				return nil // another replica compacted as far; the vacuum below may still be due
			}
			r.log.Warn("pgstore: compaction drops a snapshot row that fails authentication", "seq", newest)
			if _, err := tx.Exec(ctx, `DELETE FROM personify_snapshots WHERE seq = $1`, newest); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM personify_snapshots WHERE seq > (SELECT seq FROM personify_meta WHERE id = 1)`); err != nil {
			return err // past the head: never a real snapshot
		}
		covered = int64(seq)
		if _, err := tx.Exec(ctx, `INSERT INTO personify_snapshots (seq, data, tag) VALUES ($1, $2, $3)`, covered, buf.Bytes(), r.feed.SnapshotTag(seq, buf.Bytes())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM personify_snapshots WHERE seq < $1`, covered); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM personify_journal WHERE seq <= $1`, covered); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE personify_meta SET key_fingerprint = $1 WHERE id = 1`, r.KeyFingerprint().String())
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: compact: %w", err)
	}
	if !locked || uint64(covered) <= r.purged.Load() {
		return nil
	}
	// Deleted rows stay in the table files until they are rewritten:
	// VACUUM FULL rewrites both tables (small once compacted), and only
	// then is the erasure recorded as purged. (PostgreSQL's own WAL keeps
	// the rows until its next checkpoints recycle the segments.)
	if _, err := r.pool.Exec(ctx, `VACUUM FULL personify_journal, personify_snapshots`); err != nil {
		return fmt.Errorf("pgstore: compact: vacuum: %w", err)
	}
	if _, err := r.pool.Exec(ctx, `UPDATE personify_meta SET purged = greatest(purged, $1) WHERE id = 1`, covered); err != nil {
		return fmt.Errorf("pgstore: compact: %w", err)
	}
	r.purged.Store(max(r.purged.Load(), uint64(covered)))
	return nil
}

// maintain runs compaction (after a Forget, or when the journal has grown)
// and retention (on the replica that holds the maintenance lock).
func (r *Replica) maintain(ctx context.Context) {
	t := time.NewTicker(r.opts.MaintenanceInterval)
	defer t.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var armed time.Time
	arm := func() {
		r.pmu.Lock()
		by := r.purgeBy
		r.pmu.Unlock()
		if by.IsZero() || !armed.IsZero() && !by.Before(armed) {
			return
		}
		armed = by
		timer.Reset(max(by.Sub(r.now()), 0))
	}
	arm()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-r.kick: // an erasure was applied (here or on another replica): compact when it is due
			arm()
		case <-timer.C:
			armed = time.Time{}
			r.pmu.Lock()
			r.purgeBy = time.Time{}
			r.pmu.Unlock()
			if !r.compactIfDue(ctx, true) {
				r.schedulePurgeRetry()
			}
			arm()
		case <-t.C:
			r.expireIfLeader(ctx)
			r.compactIfDue(ctx, false)
			r.forgetDeadReplicas(ctx)
		}
	}
}

// schedulePurgeRetry asks again for a compaction a second from now, after
// one failed.
func (r *Replica) schedulePurgeRetry() { (*journal)(r).SchedulePurge(r.now().Add(time.Second)) }

func (r *Replica) now() time.Time {
	if r.opts.Engine.Now != nil {
		return r.opts.Engine.Now()
	}
	return time.Now()
}

// forgetDeadReplicas removes rows of replicas not seen for an hour (a
// crashed process never said goodbye).
func (r *Replica) forgetDeadReplicas(ctx context.Context) {
	_, _ = r.pool.Exec(ctx, `DELETE FROM personify_replicas WHERE seen < now() - interval '1 hour'`)
}

// compactIfDue compacts when asked (an erasure is due) or when the
// journal has grown past CompactAfter. It reports whether it succeeded (or
// had nothing to do).
func (r *Replica) compactIfDue(ctx context.Context, asked bool) bool {
	if !asked {
		var rows int64
		// Sequence numbers have no gaps, so the rows since the newest
		// snapshot are a subtraction, not a scan of the journal.
		if err := r.pool.QueryRow(ctx, `SELECT m.seq - coalesce((SELECT max(seq) FROM personify_snapshots), 0)
			FROM personify_meta m WHERE m.id = 1`).Scan(&rows); err != nil || rows < int64(r.opts.CompactAfter) {
			return err == nil
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 10*r.opts.PollInterval)
	err := r.Sync(sctx)
	cancel()
	if err != nil {
		return false
	}
	if err := r.Compact(ctx); err != nil {
		if ctx.Err() == nil {
			r.log.Warn("pgstore: compaction failed", "error", err)
		}
		return false
	}
	return true
}

// expireIfLeader applies retention on one replica per interval: the one
// whose update of last_expire wins.
func (r *Replica) expireIfLeader(ctx context.Context) {
	tag, err := r.pool.Exec(ctx, `UPDATE personify_meta SET last_expire = now()
		WHERE id = 1 AND last_expire < now() - make_interval(secs => $1)`, r.opts.MaintenanceInterval.Seconds())
	if err != nil || tag.RowsAffected() == 0 {
		return
	}
	if _, err := r.Expire(r.now()); err != nil && ctx.Err() == nil {
		r.log.Warn("pgstore: expire failed", "error", err)
	}
}

// Close stops following the journal and closes the engine and the
// connections. Writes acknowledged before are in the database.
func (r *Replica) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	r.cancel()
	r.wg.Wait()
	r.amu.Lock() // no batch starts after this (Append checks closed under amu)
	r.amu.Unlock()
	r.batches.Wait()
	r.leave()
	err := r.Replica.Close()
	r.pool.Close()
	return err
}
