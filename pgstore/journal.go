package pgstore

import (
	"bytes"
	"context"
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
