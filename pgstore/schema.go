package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/personify-go/personify/anonymize"
)

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
