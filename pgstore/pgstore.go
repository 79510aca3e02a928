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
package pgstore

import (
	"bytes"
	"context"
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
// once this replica applied them.
type Replica struct {
	*personify.Engine
	pool *pgxpool.Pool
	opts Options
	log  *slog.Logger

	purged atomic.Uint64
	kick   chan struct{}

	amu          sync.Mutex // the append batch being filled, and whether one is being written
	acond        *sync.Cond
	pendingBatch *appendBatch
	writing      bool

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
}

const (
	channel       = "personify_journal"
	lockMigrate   = 0x70657273 // advisory lock ids ("pers"...)
	lockCompact   = 0x70657274
	maxFetchBatch = 5000
)

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
	r := &Replica{pool: pool, opts: opts, log: opts.Logger, kick: make(chan struct{}, 1)}
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
	e, err := personify.NewReplica(opts.Engine, (*journal)(r), personify.ReplicaOptions{})
	if err != nil {
		return fail(err)
	}
	r.Engine = e
	if err := r.loadSnapshot(ctx); err != nil {
		e.Close()
		return fail(err)
	}
	if err := r.catchUp(ctx, pool); err != nil {
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
	for _, g := range given {
		if g == stored {
			return nil
		}
	}
	return fmt.Errorf("%w: the database's data is under key %s; this replica was given %v: use the fleet's key", ErrWrongKey, stored, given)
}

// loadSnapshot loads the newest snapshot, if any.
func (r *Replica) loadSnapshot(ctx context.Context) error {
	var seq int64
	var data []byte
	err := r.pool.QueryRow(ctx, `SELECT seq, data FROM personify_snapshots WHERE seq > $1 ORDER BY seq DESC LIMIT 1`,
		int64(r.Applied())).Scan(&seq, &data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // none, or none newer than what this replica applied
	}
	if err != nil {
		return fmt.Errorf("pgstore: read the newest snapshot: %w", err)
	}
	if err := r.LoadSnapshot(bytes.NewReader(data)); err != nil {
		return fmt.Errorf("pgstore: snapshot %d: %w", seq, err)
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
			if err := r.loadSnapshot(ctx); err != nil {
				return err
			}
			continue
		}
		if n < maxFetchBatch {
			return nil
		}
	}
}

func (r *Replica) fetch(ctx context.Context, q querier) (n int, gap bool, err error) {
	n, gap, err = r.fetchRows(ctx, q)
	if err != nil || gap || n > 0 {
		return n, gap, err
	}
	// Nothing after Applied: either this replica is current, or a
	// compaction deleted the rows it had not read and nothing was written
	// since. The newest snapshot tells which.
	rows, err := q.Query(ctx, `SELECT coalesce(max(seq), 0) FROM personify_snapshots`)
	if err != nil {
		return 0, false, fmt.Errorf("pgstore: read the journal: %w", err)
	}
	newest, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, false, fmt.Errorf("pgstore: read the journal: %w", err)
	}
	return 0, uint64(newest) > r.Applied(), nil
}

func (r *Replica) fetchRows(ctx context.Context, q querier) (n int, gap bool, err error) {
	rows, err := q.Query(ctx, `SELECT seq, change FROM personify_journal WHERE seq > $1 ORDER BY seq LIMIT $2`,
		int64(r.Applied()), maxFetchBatch)
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
		if err := r.Apply(uint64(seq), change); err != nil {
			if errors.Is(err, personify.ErrGap) {
				return n, true, nil
			}
			return n, false, fmt.Errorf("pgstore: journal row %d: %w", seq, err)
		}
		n++
	}
	return n, false, rows.Err()
}

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
		r.log.Warn("pgstore: journal connection lost; reconnecting", "error", err, "after", backoff)
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
	for r.Applied() < uint64(head) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgstore: sync: applied %d of %d: %w", r.Applied(), head, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// journal is the personify.Journal of a replica.
type journal Replica

// Append stores a change. Concurrent appends are batched: one goroutine
// (the leader) writes every change queued meanwhile in one transaction, so
// that they share the database's commit flush (group commit), while the
// others wait for its outcome. The sequence numbers come from the meta
// row, whose lock orders the transactions, so numbers commit in order and
// without gaps; the notification wakes the other replicas at commit.
func (j *journal) Append(ctx context.Context, change []byte) (uint64, error) {
	j.amu.Lock()
	b := j.pendingBatch
	if b != nil { // a batch is filling: its leader writes this change too
		idx := len(b.changes)
		b.changes = append(b.changes, change)
		j.amu.Unlock()
		<-b.done
		return b.first + uint64(idx), b.err
	}
	b = &appendBatch{changes: [][]byte{change}, done: make(chan struct{})} // this goroutine leads it
	j.pendingBatch = b
	const idx = 0
	for j.writing { // one batch in flight at a time; this one fills meanwhile
		j.acond.Wait()
	}
	j.writing = true
	j.pendingBatch = nil // later appends start the next batch
	changes := b.changes
	j.amu.Unlock()

	b.first, b.err = j.write(ctx, changes)
	close(b.done)
	j.amu.Lock()
	j.writing = false
	j.acond.Broadcast()
	j.amu.Unlock()
	return b.first + uint64(idx), b.err
}

type appendBatch struct {
	changes [][]byte
	done    chan struct{}
	first   uint64
	err     error
}

// write appends changes in one transaction and returns the first's
// sequence number.
func (j *journal) write(ctx context.Context, changes [][]byte) (uint64, error) {
	var last int64
	err := pgx.BeginFunc(ctx, j.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `UPDATE personify_meta SET seq = seq + $1 WHERE id = 1 RETURNING seq`, len(changes)).Scan(&last); err != nil {
			return err
		}
		first := last - int64(len(changes)) + 1
		if _, err := tx.Exec(ctx, `INSERT INTO personify_journal (seq, change)
			SELECT $1 + ord - 1, c FROM unnest($2::bytea[]) WITH ORDINALITY AS t(c, ord)`, first, changes); err != nil {
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
func (j *journal) SchedulePurge() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
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
	if uint64(newest) >= r.Applied() && purged >= newest {
		r.purged.Store(max(r.purged.Load(), uint64(purged)))
		return nil
	}
	var buf bytes.Buffer
	seq, _, err := r.WriteReplicaSnapshot(&buf)
	if err != nil {
		return fmt.Errorf("pgstore: compact: %w", err)
	}
	var locked bool
	var covered int64 // the newest snapshot once the transaction commits: rows up to it are deleted
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, lockCompact).Scan(&locked); err != nil || !locked {
			return err // another replica is compacting
		}
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM personify_snapshots`).Scan(&covered); err != nil {
			return err
		}
		if uint64(covered) >= seq {
			return nil // nothing new to snapshot; the vacuum below may still be due
		}
		covered = int64(seq)
		if _, err := tx.Exec(ctx, `INSERT INTO personify_snapshots (seq, data) VALUES ($1, $2)`, covered, buf.Bytes()); err != nil {
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
	var purgeDue <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick: // a Forget: compact within a quarter of PurgeWithin, one snapshot for the window's erasures
			if purgeDue == nil {
				purgeDue = time.After(r.opts.PurgeWithin / 4)
			}
		case <-purgeDue:
			purgeDue = nil
			r.compactIfDue(ctx, true)
		case <-t.C:
			r.expireIfLeader(ctx)
			r.compactIfDue(ctx, false)
		}
	}
}

func (r *Replica) compactIfDue(ctx context.Context, asked bool) {
	if !asked {
		var rows int64
		// Sequence numbers have no gaps, so the rows since the newest
		// snapshot are a subtraction, not a scan of the journal.
		if err := r.pool.QueryRow(ctx, `SELECT m.seq - coalesce((SELECT max(seq) FROM personify_snapshots), 0)
			FROM personify_meta m WHERE m.id = 1`).Scan(&rows); err != nil || rows < int64(r.opts.CompactAfter) {
			return
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 10*r.opts.PollInterval)
	err := r.Sync(sctx)
	cancel()
	if err != nil {
		return
	}
	if err := r.Compact(ctx); err != nil && ctx.Err() == nil {
		r.log.Warn("pgstore: compaction failed", "error", err)
	}
}

// expireIfLeader applies retention on one replica per interval: the one
// whose update of last_expire wins.
func (r *Replica) expireIfLeader(ctx context.Context) {
	tag, err := r.pool.Exec(ctx, `UPDATE personify_meta SET last_expire = now()
		WHERE id = 1 AND last_expire < now() - make_interval(secs => $1)`, r.opts.MaintenanceInterval.Seconds())
	if err != nil || tag.RowsAffected() == 0 {
		return
	}
	if _, err := r.Expire(time.Now()); err != nil && ctx.Err() == nil {
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
	err := r.Engine.Close()
	r.pool.Close()
	return err
}
