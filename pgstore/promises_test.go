package pgstore

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
	"github.com/personify-go/personify/personify/replica"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// putRow writes a journal row straight into the table, as someone with
// write access to the database but without the key would: the next
// sequence number, any bytes.
func putRow(t *testing.T, conn string, change []byte) int64 {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, conn)
	require.NoError(t, err)
	defer c.Close(ctx)
	var seq int64
	require.NoError(t, pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `UPDATE personify_meta SET seq = seq + 1 WHERE id = 1 RETURNING seq`).Scan(&seq); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO personify_journal (seq, change) VALUES ($1, $2)`, seq, change); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, fmt.Sprint(seq))
		return err
	}))
	return seq
}

// The database is trusted to store, not to decide: a row written straight
// into the journal without the key (a forged erasure, a valid row copied
// to a new position, garbage) changes nothing on any replica, and one bad
// row does not stop the writes after it from reaching every replica.
func TestForgedAndUndecodableRows(t *testing.T) {
	conn := newDB(t)
	a, b := openReplica(t, conn), openReplica(t, conn)
	defer a.Close()
	defer b.Close()
	define(t, a)
	ids := []anonymize.Identifier{person(0), person(1), person(2)}
	require.NoError(t, a.Add("runners", ids...))
	syncAll(t, a, b)

	// A valid erasure of person 1, copied to a new position: its tag
	// binds the old one.
	_, err := a.Forget(person(1))
	require.NoError(t, err)
	syncAll(t, a, b)
	require.NoError(t, a.Add("runners", person(1))) // back in
	syncAll(t, a, b)
	before := a.Stats()
	forgetRow := func() []byte {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, conn)
		require.NoError(t, err)
		defer c.Close(ctx)
		var row []byte
		require.NoError(t, c.QueryRow(ctx, `SELECT change FROM personify_journal ORDER BY seq DESC OFFSET 1 LIMIT 1`).Scan(&row))
		return row
	}()
	putRow(t, conn, forgetRow)
	// The same erasure with its tag replaced (as if recomputed without
	// the key), and a row that is not a change at all.
	forged := append([]byte{}, forgetRow[:len(forgetRow)-32]...)
	forged = append(forged, make([]byte, 32)...)
	putRow(t, conn, forged)
	putRow(t, conn, []byte("\x02not a change"))
	// Later writes reach every replica.
	require.NoError(t, b.Add("swimmers", person(2)))
	syncAll(t, a, b)
	for _, r := range []*Replica{a, b} {
		p, err := r.Pseudonym(person(1))
		require.NoError(t, err)
		assert.True(t, r.In(p, "runners"), "no forged or moved erasure was applied")
		p2, _ := r.Pseudonym(person(2))
		assert.True(t, r.In(p2, "swimmers"), "the write after the bad rows arrived")
		st := r.Status()
		assert.Equal(t, uint64(3), st.Refused)
		assert.NoError(t, st.Stalled)
	}
	assert.Equal(t, view(t, a, 3), view(t, b, 3))
	after := a.Stats()
	assert.Equal(t, before.People, after.People, "the bad rows changed nothing")
	assert.Equal(t, before.Memberships+1, after.Memberships, "only the last write changed something")
	// A new replica reads the same journal and reaches the same state, and
	// a compaction's snapshot loads.
	c := openReplica(t, conn)
	defer c.Close()
	assert.Equal(t, view(t, a, 3), view(t, c, 3))
	require.NoError(t, a.Compact(context.Background()))
	d := openReplica(t, conn)
	defer d.Close()
	assert.Equal(t, view(t, a, 3), view(t, d, 3))
}

// A snapshot row altered or written without the key is refused.
func TestForgedSnapshotRowIsRefused(t *testing.T) {
	conn := newDB(t)
	a := openReplica(t, conn)
	defer a.Close()
	define(t, a)
	require.NoError(t, a.Add("runners", person(0)))
	require.NoError(t, a.Compact(context.Background()))
	ctx := context.Background()
	c, err := pgx.Connect(ctx, conn)
	require.NoError(t, err)
	defer c.Close(ctx)
	_, err = c.Exec(ctx, `UPDATE personify_snapshots SET tag = NULL`)
	require.NoError(t, err)
	_, err = Open(ctx, conn, Options{Engine: personify.Options{Key: testKey, K: 1}, MaintenanceInterval: -1})
	require.ErrorIs(t, err, ErrJournalDamaged, "the state is in a snapshot that does not verify: never an empty replica")
}

// Rotation across a fleet: RotateKey refuses while a live replica lacks
// the key; a replica that meets the rotation without the key stalls,
// says so, and refuses writes and erasures (no receipt for an erasure it
// could not complete) instead of splitting from the fleet; restarted with
// the key it catches up.
func TestRotationWithAReplicaLackingTheKey(t *testing.T) {
	conn := newDB(t)
	next := anonymize.GenerateKey()
	up := func(o *Options) { o.Engine.UpcomingKeys = []anonymize.Key{next} }
	a, b := openReplica(t, conn, up), openReplica(t, conn, up)
	defer a.Close()
	defer b.Close()
	c := openReplica(t, conn) // lacks the new key
	define(t, a)
	require.NoError(t, a.Add("runners", person(0), person(1)))
	syncAll(t, a, b, c)

	err := a.RotateKey(next, time.Hour)
	require.ErrorContains(t, err, "1 of the fleet's 3 live replicas lack key "+next.Fingerprint().String())
	syncAll(t, a, b, c)
	assert.Equal(t, testKey.Fingerprint(), c.KeyFingerprint(), "nothing was rotated")

	// c's heartbeat row vanishes (the database is only trusted to store):
	// the check passes, and c meets a rotation it cannot follow.
	ctx := context.Background()
	pc, err := pgx.Connect(ctx, conn)
	require.NoError(t, err)
	defer pc.Close(ctx)
	c.silent.Store(true)
	_, err = pc.Exec(ctx, `DELETE FROM personify_replicas WHERE id = $1`, c.id)
	require.NoError(t, err)
	require.NoError(t, a.RotateKey(next, time.Hour))
	require.NoError(t, a.Add("runners", person(2))) // stored under the new key only
	syncAll(t, a, b)
	require.Eventually(t, func() bool { return c.Status().Stalled != nil }, 10*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, c.Status().Stalled, personify.ErrKeyUnavailable)
	r, err := c.Forget(person(2))
	require.ErrorIs(t, err, personify.ErrKeyUnavailable)
	assert.Empty(t, r.Signature, "no receipt")
	require.ErrorIs(t, c.Add("runners", person(3)), personify.ErrKeyUnavailable)
	// The others go on, and an erasure there covers every key.
	r, err = b.Forget(person(2))
	require.NoError(t, err)
	require.NoError(t, b.VerifyReceipt(r))
	syncAll(t, a, b)
	for _, x := range []*Replica{a, b} {
		p, _ := x.Pseudonym(person(2))
		assert.False(t, x.In(p, "runners"))
	}
	require.NoError(t, c.Close())

	// Restarted without the key, it refuses to open; with it, it catches up.
	_, err = Open(ctx, conn, Options{Engine: personify.Options{Key: testKey, K: 1}, MaintenanceInterval: -1})
	require.ErrorIs(t, err, personify.ErrKeyUnavailable)
	c2 := openReplica(t, conn, up)
	defer c2.Close()
	syncAll(t, a, c2)
	assert.Equal(t, view(t, a, 4), view(t, c2, 4))
}

// HMAC-SHA256 pseudonyms computed by PostgreSQL's pgcrypto with the
// hasher's subkey (and nothing else) equal the library's.
func TestHMACSubkeyMatchesPgcrypto(t *testing.T) {
	conn := newDB(t)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, conn)
	require.NoError(t, err)
	defer c.Close(ctx)
	_, err = c.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pgcrypto`)
	require.NoError(t, err)
	sub := hex.EncodeToString(anonymize.HMACSubkey(testKey).Bytes())
	h := anonymize.HMACSHA256(testKey)
	emails := make([]string, 1000)
	for i := range emails {
		emails[i] = fmt.Sprintf("user.%d+tag@example.com", i)
	}
	rows, err := c.Query(ctx, `SELECT e, encode(substring(hmac(convert_to('email:' || e, 'UTF8'), decode($1, 'hex'), 'sha256') FROM 1 FOR 8), 'hex')
		FROM unnest($2::text[]) AS t(e)`, sub, emails)
	require.NoError(t, err)
	n := 0
	for rows.Next() {
		var e, got string
		require.NoError(t, rows.Scan(&e, &got))
		norm, err := anonymize.Email(e).Normalize()
		require.NoError(t, err)
		if norm != e { // the query hashes what it is given: feed it normalized input
			continue
		}
		want, err := h.Pseudonym(anonymize.Email(e))
		require.NoError(t, err)
		require.Equal(t, want.String(), got, e)
		n++
	}
	require.NoError(t, rows.Err())
	_ = binary.LittleEndian
	require.Positive(t, n)
}

func rawExec(t *testing.T, conn, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, conn)
	require.NoError(t, err)
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql, args...)
	require.NoError(t, err)
}

// A snapshot row written without the key (here at a position past the
// journal's head, and one within it) neither stops compaction nor makes
// Purged lie, nor stops a new replica from starting.
func TestBogusSnapshotRows(t *testing.T) {
	conn := newDB(t)
	a := openReplica(t, conn)
	defer a.Close()
	define(t, a)
	require.NoError(t, a.Add("runners", person(0), person(1)))
	rawExec(t, conn, `INSERT INTO personify_snapshots (seq, data, tag) VALUES (1000000, '\x00', '\x00')`)
	rawExec(t, conn, `INSERT INTO personify_snapshots (seq, data, tag) SELECT seq, '\x00', '\x00' FROM personify_meta`)
	p1, _ := a.Pseudonym(person(1))
	r, err := a.Forget(person(1))
	require.NoError(t, err)
	require.NoError(t, a.Compact(context.Background()))
	assert.True(t, a.Purged(r))
	assert.False(t, dbHolds(t, conn, p1), "purged: no row holds the erased pseudonym")
	b, err := Open(context.Background(), conn, Options{Engine: personify.Options{Key: testKey, K: 1}, MaintenanceInterval: -1})
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, a.Add("runners", person(2)))
	syncAll(t, a, b)
	assert.Equal(t, view(t, a, 3), view(t, b, 3))
}

// A journal row written without the key at the next position or far
// ahead takes no position from a writer and stops no replica.
func TestBogusJournalRowsAhead(t *testing.T) {
	conn := newDB(t)
	a := openReplica(t, conn)
	defer a.Close()
	define(t, a)
	rawExec(t, conn, `INSERT INTO personify_journal (seq, change) VALUES (999999, decode('0267617262616765', 'hex'))`)
	rawExec(t, conn, `INSERT INTO personify_journal (seq, change) SELECT seq + 1, decode('0267617262616765', 'hex') FROM personify_meta`)
	b, err := Open(context.Background(), conn, Options{Engine: personify.Options{Key: testKey, K: 1}, MaintenanceInterval: -1})
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, a.Add("runners", person(0)))
	require.NoError(t, b.Add("runners", person(1)))
	syncAll(t, a, b)
	assert.Equal(t, view(t, a, 2), view(t, b, 2))
	assert.Zero(t, a.Status().Refused, "rows past the head are never read")
}

// Rolling the journal back (delete its tail, set the head back: no key
// needed) is noticed by a replica that applied the lost changes: it stops
// and says why, rather than serve a state the fleet no longer has.
func TestJournalRollbackStallsReplicas(t *testing.T) {
	conn := newDB(t)
	a := openReplica(t, conn)
	defer a.Close()
	define(t, a)                                    // rows 1..3
	require.NoError(t, a.Add("runners", person(0))) // row 4
	syncAll(t, a)
	rawExec(t, conn, `DELETE FROM personify_journal WHERE seq > 3`)
	rawExec(t, conn, `UPDATE personify_meta SET seq = 3`)
	require.Eventually(t, func() bool { return a.Status().Stalled != nil }, 10*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, a.Status().Stalled, ErrJournalDamaged)
	require.ErrorIs(t, a.Add("runners", person(1)), ErrJournalDamaged)

	// The same when the lost row was rewritten by a writer that started after.
	conn2 := newDB(t)
	c := openReplica(t, conn2)
	defer c.Close()
	define(t, c)
	require.NoError(t, c.Add("runners", person(0))) // row 4
	syncAll(t, c)
	c.silent.Store(true)
	rawExec(t, conn2, `DELETE FROM personify_journal WHERE seq > 3`)
	rawExec(t, conn2, `UPDATE personify_meta SET seq = 3`)
	d := openReplica(t, conn2)
	defer d.Close()
	require.NoError(t, d.Add("swimmers", person(5))) // row 4 again, another change
	require.Eventually(t, func() bool { return c.Status().Stalled != nil }, 10*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, c.Status().Stalled, ErrJournalDamaged)

	// A row it applied, replaced in place.
	conn3 := newDB(t)
	f := openReplica(t, conn3)
	defer f.Close()
	define(t, f)
	require.NoError(t, f.Add("runners", person(0))) // row 4
	syncAll(t, f)
	rawExec(t, conn3, `UPDATE personify_journal SET change = (SELECT change FROM personify_journal WHERE seq = 3) WHERE seq = 4`)
	rawExec(t, conn3, `SELECT pg_notify('personify_journal', '4')`)
	require.Eventually(t, func() bool { return f.Status().Stalled != nil }, 10*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, f.Status().Stalled, ErrJournalDamaged)
	assert.Contains(t, f.Status().Stalled.Error(), "row 4")
}

// A replica's API has no way to load a state, or apply a change, that did
// not come from the journal: the calls that split r1 from the fleet
// (r1.LoadSnapshot(snap), r1.Apply(...)) no longer compile. Checked by
// reflection over the method set, so that adding one back fails here.
func TestReplicaCannotDiverge(t *testing.T) {
	typ := reflect.TypeOf(&Replica{})
	for _, name := range []string{"LoadSnapshot", "LoadReplicaSnapshot", "Apply", "Engine", "WriteReplicaSnapshot", "Feed"} {
		_, ok := typ.MethodByName(name)
		assert.False(t, ok, "pgstore.Replica has method %s", name)
	}
	_, ok := typ.MethodByName("Segments")
	assert.True(t, ok, "the engine's API is there")
	for i := range typ.Elem().NumField() { // nor a field to reach or replace the engine through
		f := typ.Elem().Field(i)
		assert.False(t, f.IsExported(), "pgstore.Replica has exported field %s", f.Name)
	}
	for i := range typ.NumMethod() {
		m := typ.Method(i)
		for j := range m.Type.NumIn() {
			assert.NotEqual(t, reflect.TypeOf(&personify.Engine{}), m.Type.In(j), "%s takes an engine", m.Name)
		}
		for j := range m.Type.NumOut() {
			assert.NotEqual(t, reflect.TypeOf(&personify.Engine{}), m.Type.Out(j), "%s hands out the engine", m.Name)
		}
	}
}

// A batch's transaction belongs to none of its appenders: one that stops
// waiting neither fails nor delays the others' changes, and is told the
// truth: a change still queued leaves the batch and was not made; one in a
// transaction under way has an unknown outcome (ErrNotApplied), and here
// it is in fact stored.
func TestAppendBatchIsolatesContexts(t *testing.T) {
	conn := newDB(t)
	r := openReplica(t, conn) // maintenance is off: no other batch runs
	defer r.Close()
	j := (*journal)(r)
	seal := func(_ uint64, c []byte) []byte { return c } // unauthenticated: the replicas refuse these rows, which is fine here
	head := func() int64 {
		var seq int64
		require.NoError(t, r.pool.QueryRow(context.Background(), `SELECT seq FROM personify_meta WHERE id = 1`).Scan(&seq))
		return seq
	}

	gone, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := j.Append(gone, []byte("never"), seal)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, replica.ErrNotApplied, "an ended context queues nothing")

	// Hold a batch in flight, so that the next appends share one batch.
	j.amu.Lock()
	j.writing = true
	j.amu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() { _, err := j.Append(ctx, []byte("first"), seal); firstErr <- err }() // starts the batch
	queued := func(n int) {
		require.Eventually(t, func() bool {
			j.amu.Lock()
			defer j.amu.Unlock()
			return j.pendingBatch != nil && len(j.pendingBatch.reqs) == n
		}, 5*time.Second, time.Millisecond)
	}
	queued(1)
	var wg sync.WaitGroup
	seqs := make([]uint64, 3)
	errs := make([]error, 3)
	for i := range seqs {
		wg.Go(func() { seqs[i], errs[i] = j.Append(context.Background(), []byte("later"), seal) })
	}
	queued(4)
	cancel()
	err = <-firstErr
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, replica.ErrNotApplied, "a change still queued was not made")
	j.amu.Lock()
	j.writing = false
	j.acond.Broadcast()
	j.amu.Unlock()
	wg.Wait()
	for i := range seqs {
		require.NoError(t, errs[i])
	}
	slices.Sort(seqs)
	assert.Equal(t, []uint64{1, 2, 3}, seqs, "one batch, without the change that left it")
	assert.Equal(t, int64(3), head())

	// A transaction under way: another session holds the meta row.
	bg := context.Background()
	lock, err := pgx.Connect(bg, conn)
	require.NoError(t, err)
	defer lock.Close(bg)
	tx, err := lock.Begin(bg)
	require.NoError(t, err)
	_, err = tx.Exec(bg, `SELECT seq FROM personify_meta WHERE id = 1 FOR UPDATE`)
	require.NoError(t, err)
	ctx, cancel = context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { _, err := j.Append(ctx, []byte("unknown"), seal); done <- err }()
	require.Eventually(t, func() bool {
		j.amu.Lock()
		defer j.amu.Unlock()
		return j.writing && j.pendingBatch == nil // taken, its UPDATE waiting for the lock
	}, 5*time.Second, time.Millisecond)
	cancel()
	err = <-done
	require.ErrorIs(t, err, replica.ErrNotApplied)
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, tx.Rollback(bg))
	require.Eventually(t, func() bool { return head() == 4 }, 5*time.Second, 10*time.Millisecond, "stored after all")
}
