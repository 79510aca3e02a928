package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/personify-go/personify/personify"
	"github.com/personify-go/personify/personify/replica"
)

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
