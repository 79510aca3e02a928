package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

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
