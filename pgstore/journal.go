package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
	"github.com/personify-go/personify/personify/replica"
)

// journal is the replica.Journal of a Replica.
type journal Replica

var (
	_ replica.Journal    = (*journal)(nil)
	_ replica.Purger     = (*journal)(nil)
	_ replica.KeyChecker = (*journal)(nil)
)

// Append stores a change. Concurrent appends are batched: one goroutine
// writes every change queued meanwhile in one transaction, so that they
// share the database's commit flush (group commit), while the appenders
// wait for its outcome. The sequence numbers come from the meta row, whose
// lock orders the transactions, so numbers commit in order and without
// gaps; the notification wakes the other replicas at commit.
//
// The batch's transaction belongs to none of its appenders: one whose
// context ends stops waiting, and the others' changes are written all the
// same (within Options.WriteTimeout). Whoever stops waiting is told the
// truth: before the batch was taken, its change leaves it and was not
// made; once the transaction is under way, the outcome is unknown
// (replica.ErrNotApplied).
func (j *journal) Append(ctx context.Context, change []byte, seal func(uint64, []byte) []byte) (uint64, error) {
	if err := (*Replica)(j).stalled(); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("pgstore: append to the journal: %w", err)
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
		go j.writeBatch(b)
	}
	req := &appendReq{change: change, seal: seal}
	b.reqs = append(b.reqs, req)
	j.amu.Unlock()
	select {
	case <-b.done:
		return req.seq, b.err
	case <-ctx.Done():
	}
	j.amu.Lock()
	taken := b.taken
	req.gone = !taken
	j.amu.Unlock()
	if !taken {
		return 0, fmt.Errorf("pgstore: append to the journal: the change was still queued: %w", ctx.Err())
	}
	select {
	case <-b.done: // finished meanwhile: the outcome is known after all
		return req.seq, b.err
	default:
		return 0, fmt.Errorf("%w: pgstore: the journal's transaction was under way when the wait ended (%w), so the change may or may not be stored", replica.ErrNotApplied, ctx.Err())
	}
}

type appendBatch struct {
	reqs  []*appendReq
	taken bool // its goroutine took it: no change joins or leaves it any more (amu)
	done  chan struct{}
	err   error // set before done is closed
}

type appendReq struct {
	change []byte
	seal   func(uint64, []byte) []byte
	gone   bool   // its appender stopped waiting before the batch was taken (amu)
	seq    uint64 // set before the batch's done is closed
}

// writeBatch waits for the batch in flight, takes b (later appends start
// the next batch) and writes it, under the replica's context (which Close
// cancels) and Options.WriteTimeout.
func (j *journal) writeBatch(b *appendBatch) {
	defer j.batches.Done()
	j.amu.Lock()
	for j.writing { // one batch in flight at a time; b fills meanwhile
		j.acond.Wait()
	}
	j.writing = true
	j.pendingBatch = nil
	b.taken = true
	var reqs []*appendReq
	for _, q := range b.reqs {
		if !q.gone {
			reqs = append(reqs, q)
		}
	}
	j.amu.Unlock()

	if len(reqs) > 0 {
		ctx, cancel := context.WithTimeout(j.bg, j.opts.WriteTimeout)
		var first uint64
		first, b.err = j.write(ctx, reqs)
		cancel()
		for i, q := range reqs {
			if b.err == nil {
				q.seq = first + uint64(i)
			}
		}
	}
	close(b.done)
	j.amu.Lock()
	j.writing = false
	j.acond.Broadcast()
	j.amu.Unlock()
}

// write appends the changes of reqs in one transaction and returns the
// first's sequence number. Each change is sealed (authenticated together
// with its number) once the number is known, inside the transaction. An
// error before the commit means nothing was stored; one from the commit
// itself, other than the server refusing it, leaves the outcome unknown
// (replica.ErrNotApplied).
func (j *journal) write(ctx context.Context, reqs []*appendReq) (uint64, error) {
	fail := func(err error) (uint64, error) { return 0, fmt.Errorf("pgstore: append to the journal: %w", err) }
	tx, err := j.pool.Begin(ctx)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // after a commit, a no-op
	var last int64
	if err := tx.QueryRow(ctx, `UPDATE personify_meta SET seq = seq + $1 WHERE id = 1 RETURNING seq`, len(reqs)).Scan(&last); err != nil {
		return fail(err)
	}
	first := last - int64(len(reqs)) + 1
	// Rows past the old head are not committed positions: only someone
	// writing the table directly makes them. They go, so that they can
	// neither take this batch's numbers nor be read as changes.
	if _, err := tx.Exec(ctx, `DELETE FROM personify_journal WHERE seq >= $1`, first); err != nil {
		return fail(err)
	}
	sealed := make([][]byte, len(reqs))
	for i, q := range reqs {
		sealed[i] = q.seal(uint64(first)+uint64(i), bytes.Clone(q.change))
	}
	if _, err := tx.Exec(ctx, `INSERT INTO personify_journal (seq, change)
		SELECT $1 + ord - 1, c FROM unnest($2::bytea[]) WITH ORDINALITY AS t(c, ord)`, first, sealed); err != nil {
		return fail(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, strconv.FormatInt(last, 10)); err != nil {
		return fail(err)
	}
	if err := tx.Commit(ctx); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) || errors.Is(err, pgx.ErrTxCommitRollback) { // the server answered: rolled back
			return fail(err)
		}
		return 0, fmt.Errorf("%w: pgstore: the journal's commit got no answer (%w), so the change may or may not be stored", replica.ErrNotApplied, err)
	}
	return uint64(first), nil
}

// PurgedThrough, PurgeWithin and SchedulePurge implement replica.Purger.
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

// CheckKey implements replica.KeyChecker: it refuses a rotation to key fp
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
