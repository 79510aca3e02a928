package pgstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
	"github.com/personify-go/personify/pgstore/pgtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	srvOnce sync.Once
	srv     *pgtest.Server
	srvErr  error
	dbSeq   atomic.Int64
)

// TestMain stops the PostgreSQL server the tests started.
func TestMain(m *testing.M) {
	code := m.Run()
	if srv != nil {
		srv.Close()
	}
	os.Exit(code)
}

// server returns the process's PostgreSQL server, starting it once; the
// test is skipped, saying why, only when no PostgreSQL binaries exist.
func server(t testing.TB) *pgtest.Server {
	srvOnce.Do(func() { srv, srvErr = pgtest.Start() })
	if errors.Is(srvErr, pgtest.ErrNoPostgres) {
		t.Skip(srvErr)
	}
	require.NoError(t, srvErr)
	return srv
}

// newDB creates a fresh database and returns its connection string.
func newDB(t testing.TB) string {
	s := server(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.ConnString())
	require.NoError(t, err)
	defer conn.Close(ctx)
	name := fmt.Sprintf("fleet%d", dbSeq.Add(1))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name)
	require.NoError(t, err)
	return s.ConnString() + " dbname=" + name
}

var testKey = func() anonymize.Key {
	k, err := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		panic(err)
	}
	return k
}()

func openReplica(t testing.TB, conn string, mutate ...func(*Options)) *Replica {
	t.Helper()
	opts := Options{Engine: personify.Options{Key: testKey, K: 1}, PollInterval: 200 * time.Millisecond, MaintenanceInterval: -1}
	for _, m := range mutate {
		m(&opts)
	}
	r, err := Open(context.Background(), conn, opts)
	require.NoError(t, err)
	return r
}

func person(i int) anonymize.Identifier {
	return anonymize.Email(fmt.Sprintf("person%d@example.com", i))
}

// view is what a replica answers about people 0..n-1: their explain
// reports (without the generation time) and the engine's counts.
func view(t testing.TB, r *Replica, n int) string {
	var b bytes.Buffer
	for i := range n {
		rep, err := r.Explain(person(i))
		require.NoError(t, err)
		rep.GeneratedAt = time.Time{}
		for k := range rep.Segments {
			rep.Segments[k].AddedAt = time.Time{}
		}
		j, _ := json.Marshal(rep)
		b.Write(j)
		b.WriteByte('\n')
	}
	st := r.Stats()
	fmt.Fprintf(&b, "people %d segments %d memberships %d\n", st.People, st.Segments, st.Memberships)
	return b.String()
}

func define(t testing.TB, r *Replica) {
	require.NoError(t, r.DefinePurpose(personify.Purpose{Name: "ads", Model: personify.OptOut}))
	require.NoError(t, r.Define(personify.Segment{Name: "runners", Purpose: "ads"}))
	require.NoError(t, r.Define(personify.Segment{Name: "swimmers", Purpose: "ads"}))
}

func syncAll(t testing.TB, rs ...*Replica) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range rs {
		require.NoError(t, r.Sync(ctx))
	}
}

func TestThreeReplicasConverge(t *testing.T) {
	conn := newDB(t)
	rs := []*Replica{openReplica(t, conn), openReplica(t, conn), openReplica(t, conn)}
	defer func() {
		for _, r := range rs {
			r.Close()
		}
	}()
	define(t, rs[0])
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() {
			for k := range 60 {
				id := person(i*100 + k)
				assert.NoError(t, r.Add([]string{"runners", "swimmers"}[k%2], id))
				switch k % 10 {
				case 3:
					assert.NoError(t, r.SetConsent(id, "ads", false))
				case 7:
					_, err := r.Forget(person(((i+1)%3)*100 + k - 1)) // another replica's person
					assert.NoError(t, err)
				}
			}
		})
	}
	wg.Wait()
	syncAll(t, rs...)
	want := view(t, rs[0], 300)
	assert.Contains(t, want, `"name":"runners"`)
	for _, r := range rs[1:] {
		assert.Equal(t, want, view(t, r, 300))
	}
	// Every replica applied every change once, in order.
	for _, r := range rs {
		assert.Equal(t, rs[0].feed.Applied(), r.feed.Applied())
	}
}

func TestWrongKeyIsRefused(t *testing.T) {
	conn := newDB(t)
	r := openReplica(t, conn)
	define(t, r)
	r.Close()
	other, _ := anonymize.KeyFromHex("ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100")
	_, err := Open(context.Background(), conn, Options{Engine: personify.Options{Key: other}})
	require.ErrorIs(t, err, personify.ErrWrongKey)
	assert.Contains(t, err.Error(), testKey.Fingerprint().String())
}

// TestReplicaRestartMidStream kills a replica while another writes, starts
// it again, and checks it catches up, from the journal and, after a
// compaction removed what it missed, from the snapshot.
func TestReplicaRestartMidStream(t *testing.T) {
	conn := newDB(t)
	writer := openReplica(t, conn)
	defer writer.Close()
	define(t, writer)
	stop := make(chan struct{})
	var acked atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			if assert.NoError(t, writer.Add("runners", person(k))) {
				acked.Store(int64(k + 1))
			}
		}
	})
	reader := openReplica(t, conn)
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, reader.Close()) // stopped mid-stream
	time.Sleep(100 * time.Millisecond)
	reader = openReplica(t, conn) // restarted: from the journal
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, reader.Close())
	require.NoError(t, writer.Sync(context.Background()))
	require.NoError(t, writer.Compact(context.Background())) // removes journal rows the reader never read
	time.Sleep(50 * time.Millisecond)
	reader = openReplica(t, conn) // restarted: from the snapshot, then the journal
	defer reader.Close()
	time.Sleep(100 * time.Millisecond)
	// Enough writes to matter, however slow the machine: on a loaded one
	// the writer may not have reached them in the sleeps above.
	require.Eventually(t, func() bool { return acked.Load() > 50 }, 30*time.Second, 10*time.Millisecond)
	close(stop)
	wg.Wait()
	syncAll(t, writer, reader)
	n := int(acked.Load())
	require.Greater(t, n, 50)
	assert.Equal(t, view(t, writer, n), view(t, reader, n))
	for k := range n {
		p, err := reader.Pseudonym(person(k))
		require.NoError(t, err)
		require.True(t, reader.In(p, "runners"), "acknowledged write %d", k)
	}
}

// TestDatabaseRestartUnderLoad restarts PostgreSQL while two replicas
// write: writes fail while it is down (and are not applied), the replicas
// reconnect by themselves, and every acknowledged write is on both.
func TestDatabaseRestartUnderLoad(t *testing.T) {
	s := server(t)
	conn := newDB(t)
	a, b := openReplica(t, conn), openReplica(t, conn)
	defer a.Close()
	defer b.Close()
	define(t, a)
	stop := make(chan struct{})
	var mu sync.Mutex
	var ok []int
	failed := 0
	var wg sync.WaitGroup
	for w, r := range []*Replica{a, b} {
		wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				id := w*1_000_000 + k
				err := r.Add("runners", person(id))
				mu.Lock()
				if err == nil {
					ok = append(ok, id)
				} else {
					failed++
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, s.Restart())
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d writes acknowledged, %d failed while the database was down", len(ok), failed)
	assert.Positive(t, failed, "writes fail while the database is down")
	syncAll(t, a, b)
	for _, r := range []*Replica{a, b} {
		for _, id := range ok {
			p, err := r.Pseudonym(person(id))
			require.NoError(t, err)
			require.True(t, r.In(p, "runners"), "acknowledged write %d", id)
		}
	}
	ca, _ := a.Len("runners")
	cb, _ := b.Len("runners")
	assert.Equal(t, ca, cb)
}

// TestDroppedConnection terminates every connection of the database from
// the server side; replicas reconnect and carry on.
func TestDroppedConnection(t *testing.T) {
	conn := newDB(t)
	a, b := openReplica(t, conn), openReplica(t, conn)
	defer a.Close()
	defer b.Close()
	define(t, a)
	require.NoError(t, a.Add("runners", person(1)))
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, server(t).ConnString())
	require.NoError(t, err)
	defer admin.Close(ctx)
	cfg, _ := pgx.ParseConfig(conn)
	_, err = admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, cfg.Database)
	require.NoError(t, err)
	// The pool reconnects; a write may fail once on a dead connection.
	require.Eventually(t, func() bool { return a.Add("runners", person(2)) == nil }, 10*time.Second, 50*time.Millisecond)
	syncAll(t, a, b)
	p, _ := b.Pseudonym(person(2))
	assert.True(t, b.In(p, "runners"))
}

// TestForgetAcrossFleet erases a person on one replica, measures how long
// until every replica shows them gone, and checks that no database row
// still holds their pseudonym once compaction ran.
func TestForgetAcrossFleet(t *testing.T) {
	conn := newDB(t)
	fast := func(o *Options) {
		o.MaintenanceInterval = 50 * time.Millisecond
		o.PurgeWithin = 200 * time.Millisecond
	}
	rs := []*Replica{openReplica(t, conn, fast), openReplica(t, conn, fast), openReplica(t, conn, fast)}
	defer func() {
		for _, r := range rs {
			r.Close()
		}
	}()
	define(t, rs[0])
	for i := range 20 {
		require.NoError(t, rs[i%3].Add("runners", person(i)))
	}
	syncAll(t, rs...)
	require.NoError(t, rs[0].Compact(context.Background())) // the person is in a snapshot too
	p, err := rs[0].Pseudonym(person(7))
	require.NoError(t, err)
	require.True(t, dbHolds(t, conn, p), "the scan must see what the database holds")

	start := time.Now()
	receipt, err := rs[1].Forget(person(7))
	require.NoError(t, err)
	var worst time.Duration
	for _, r := range rs {
		for r.In(p, "runners") {
			require.Less(t, time.Since(start), 10*time.Second)
			time.Sleep(100 * time.Microsecond)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("forgotten on every replica %v after Forget was called", worst)
	require.Eventually(t, func() bool { return rs[1].Purged(receipt) }, 10*time.Second, 10*time.Millisecond)
	assert.False(t, dbHolds(t, conn, p), "a row still holds the forgotten pseudonym")
	q, _ := rs[2].Pseudonym(person(8))
	assert.True(t, rs[2].In(q, "runners"))
}

// dbHolds scans every row of the store's tables for p's encodings.
func dbHolds(t testing.TB, conn string, p anonymize.Pseudonym) bool {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, conn)
	require.NoError(t, err)
	defer c.Close(ctx)
	var le, be [8]byte
	binary.LittleEndian.PutUint64(le[:], uint64(p))
	binary.BigEndian.PutUint64(be[:], uint64(p))
	for _, q := range []string{`SELECT change FROM personify_journal`, `SELECT data FROM personify_snapshots`,
		`SELECT convert_to(key_fingerprint, 'UTF8') FROM personify_meta`} {
		rows, err := c.Query(ctx, q)
		require.NoError(t, err)
		blobs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		require.NoError(t, err)
		for _, b := range blobs {
			if bytes.Contains(b, le[:]) || bytes.Contains(b, be[:]) || bytes.Contains(b, []byte(p.String())) {
				return true
			}
		}
	}
	return false
}

// BenchmarkAppend measures acknowledged writes through the journal (one
// Add each: appended, committed, applied by the writer's replica), from 1
// and 8 goroutines.
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 8} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			conn := newDB(b)
			r := openReplica(b, conn)
			defer r.Close()
			define(b, r)
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := w; i < b.N; i += writers {
						if err := r.Add("runners", person(i)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkPropagation measures the time from a write on one replica to
// its visibility on another, and reports the median and 99th percentile.
func BenchmarkPropagation(b *testing.B) {
	conn := newDB(b)
	w, r := openReplica(b, conn), openReplica(b, conn)
	defer w.Close()
	defer r.Close()
	define(b, w)
	syncAll(b, r)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		id := person(i)
		p, _ := r.Pseudonym(id)
		start := time.Now()
		if err := w.Add("runners", id); err != nil {
			b.Fatal(err)
		}
		for !r.In(p, "runners") {
			time.Sleep(20 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()), "p99-µs")
}

// A replica whose follower was away while another replica compacted, with
// no write after, catches up from the snapshot (it sees no gap in rows,
// since there are none: the newest snapshot tells it).
func TestLaggingReplicaCatchesUpAfterCompaction(t *testing.T) {
	conn := newDB(t)
	a, b := openReplica(t, conn), openReplica(t, conn)
	defer a.Close()
	define(t, a)
	syncAll(t, a, b)
	b.cancel() // b's follower stops, as during a long reconnect
	b.wg.Wait()
	require.NoError(t, a.Add("runners", person(1)))
	_, err := a.Forget(person(1))
	require.NoError(t, err)
	require.NoError(t, a.Add("runners", person(2)))
	require.NoError(t, a.Sync(context.Background()))
	require.NoError(t, a.Compact(context.Background()))
	bg, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.wg.Go(func() { b.follow(bg) })
	defer b.Close()
	syncAll(t, b)
	assert.Equal(t, view(t, a, 3), view(t, b, 3))
	p, _ := b.Pseudonym(person(2))
	assert.True(t, b.In(p, "runners"))
}

// Retention runs on one replica per interval, by itself.
func TestMaintenanceExpires(t *testing.T) {
	conn := newDB(t)
	r := openReplica(t, conn, func(o *Options) { o.MaintenanceInterval = 50 * time.Millisecond })
	defer r.Close()
	require.NoError(t, r.DefinePurpose(personify.Purpose{Name: "ads", Model: personify.OptOut}))
	require.NoError(t, r.Define(personify.Segment{Name: "recent", Purpose: "ads", Retention: 200 * time.Millisecond}))
	require.NoError(t, r.Add("recent", person(1)))
	require.Eventually(t, func() bool { n, _ := r.Len("recent"); return n == 0 }, 10*time.Second, 20*time.Millisecond)
}
