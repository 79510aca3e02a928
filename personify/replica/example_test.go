package replica_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
	"github.com/personify-go/personify/personify/replica"
)

// memJournal is the smallest Journal: a slice, and a reader per replica.
// pgstore is the real one.
type memJournal struct {
	mu  sync.Mutex
	log [][]byte
}

func (j *memJournal) Append(_ context.Context, change []byte, seal func(uint64, []byte) []byte) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.log = append(j.log, seal(uint64(len(j.log))+1, bytes.Clone(change))) // seal: the change's tag for its position
	return uint64(len(j.log)), nil
}

// deliver hands every change the replica has not applied to its feed, in
// order.
func (j *memJournal) deliver(f *replica.Feed) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for seq := f.Applied() + 1; seq <= uint64(len(j.log)); seq++ {
		_ = f.Apply(seq, j.log[seq-1])
	}
}

func exampleKey() anonymize.Key {
	k, _ := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	return k
}

// Replicas share one journal: a write on one reaches the others when their
// journal reader delivers it.
func ExampleNew() {
	j := &memJournal{}
	opts := personify.Options{Key: exampleKey(), K: 1}
	a, feedA, _ := replica.New(opts, j, replica.Options{})
	b, feedB, _ := replica.New(opts, j, replica.Options{})
	done := make(chan struct{})
	go func() { // a's journal reader (pgstore runs one per replica)
		defer close(done)
		for feedA.Applied() < 3 {
			j.deliver(feedA)
			time.Sleep(time.Millisecond)
		}
	}()
	_ = a.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut})
	_ = a.Define(personify.Segment{Name: "runners", Purpose: "personalization"})
	_ = a.Add("runners", anonymize.Email("ana@example.com"))
	<-done
	j.deliver(feedB)
	p, _ := b.Pseudonym(anonymize.Email("ana@example.com"))
	fmt.Println(feedB.Applied(), b.In(p, "runners"))
	// Output:
	// 3 true
}
