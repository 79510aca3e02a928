// Command fleet runs three service replicas on one PostgreSQL database:
// segments built by a batch job on one replica, a consent withdrawal and an
// erasure arriving at others, and every replica agreeing within
// milliseconds. Without -db it starts a throwaway PostgreSQL server (from
// the machine's PostgreSQL binaries) and removes it afterwards.
//
//	go run ./examples/fleet
//	go run ./examples/fleet -db 'host=/run/postgresql dbname=app'
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
	"github.com/personify-go/personify/pgstore"
	"github.com/personify-go/personify/pgstore/pgtest"
)

func main() {
	db := flag.String("db", "", "PostgreSQL connection string (empty: start a temporary server)")
	flag.Parse()
	if err := run(os.Stdout, *db); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

func run(w io.Writer, conn string) error {
	ctx := context.Background()
	if conn == "" {
		srv, err := pgtest.Start()
		if err != nil {
			return err
		}
		defer srv.Close()
		conn = srv.ConnString()
		fmt.Fprintln(w, "started a temporary PostgreSQL server")
	}
	key, err := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		return err
	}
	opts := pgstore.Options{Engine: personify.Options{Key: key, K: 3}, PollInterval: 500 * time.Millisecond}
	var fleet []*pgstore.Replica
	for range 3 {
		r, err := pgstore.Open(ctx, conn, opts)
		if err != nil {
			return err
		}
		defer r.Close()
		fleet = append(fleet, r)
	}
	fmt.Fprintf(w, "3 replicas on one database\n")

	// The batch job (on replica 0) builds the segments.
	batch := fleet[0]
	if err := batch.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut}); err != nil {
		return err
	}
	if err := batch.Define(personify.Segment{Name: "runners", Purpose: "personalization"}); err != nil {
		return err
	}
	ids := make([]anonymize.Identifier, 100)
	for i := range ids {
		ids[i] = anonymize.Email(fmt.Sprintf("runner%d@example.com", i))
	}
	if err := batch.Add("runners", ids...); err != nil {
		return err
	}
	ana := anonymize.Email("runner7@example.com")
	p, err := fleet[2].Pseudonym(ana)
	if err != nil {
		return err
	}
	seen := waitFor(func() bool { return len(fleet[2].Segments(nil, p, "personalization")) == 1 })
	fmt.Fprintf(w, "batch load on replica 0: visible on replica 2: %v\n", seen)

	// A consent withdrawal arrives at replica 1 (the privacy portal).
	if err := fleet[1].SetConsent(ana, "personalization", false); err != nil {
		return err
	}
	seen = waitFor(func() bool { return len(fleet[2].Segments(nil, p, "personalization")) == 0 })
	fmt.Fprintf(w, "consent withdrawn on replica 1: honoured on replica 2: %v\n", seen)

	// An erasure request on replica 2.
	receipt, err := fleet[2].Forget(ana)
	if err != nil {
		return err
	}
	gone := waitFor(func() bool { return !fleet[0].In(p, "runners") && !fleet[1].In(p, "runners") })
	fmt.Fprintf(w, "forgotten on replica 2: gone on replicas 0 and 1: %v\n", gone)
	if err := fleet[0].Sync(ctx); err != nil {
		return err
	}
	if err := fleet[0].Compact(ctx); err != nil { // maintenance does this within PurgeWithin by itself
		return err
	}
	purged := waitFor(func() bool { return fleet[2].Purged(receipt) })
	fmt.Fprintf(w, "compacted: no row holds the person any more: %v\n", purged)
	n, _ := fleet[1].Len("runners")
	fmt.Fprintf(w, "runners on replica 1: %d members\n", n)
	return nil
}

// waitFor polls cond for up to 10 seconds.
func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}
