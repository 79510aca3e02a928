package wal

import (
	"context"
	"sync"
)

// Group batches concurrent writes so that they share one write and one
// fsync (group commit): the first caller while no batch is in flight leads
// and flushes everything queued meanwhile, itself included; the others
// wait for the batch that carried them. Exclusive runs a function with no
// batch in flight and none starting (a compaction, Close). The zero Group
// is ready to use; it is safe for concurrent use.
type Group[T any] struct {
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*member[T]
	leading bool
}

type member[T any] struct {
	v     T
	taken bool // a leader's batch holds it: it will be flushed
	done  bool
}

func (g *Group[T]) init() {
	if g.cond == nil {
		g.cond = sync.NewCond(&g.mu)
	}
}

// Do queues v and returns once a flush that included it has returned.
// flush runs on the leader's goroutine with the batch, in queue order.
func (g *Group[T]) Do(v T, flush func(batch []T)) {
	_ = g.DoContext(context.Background(), v, flush)
}

// DoContext is Do with a bound on the wait: if ctx ends while v is still
// queued (behind a batch in flight, or an Exclusive function), v leaves
// the queue and DoContext returns ctx's error: v was not flushed. Once a
// leader's batch holds v, the flush in progress is waited for and
// DoContext returns nil.
func (g *Group[T]) DoContext(ctx context.Context, v T, flush func(batch []T)) error {
	m := &member[T]{v: v}
	g.mu.Lock()
	g.init()
	if err := ctx.Err(); err != nil {
		g.mu.Unlock()
		return err
	}
	g.queue = append(g.queue, m)
	if g.leading && ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() {
			g.mu.Lock()
			g.cond.Broadcast()
			g.mu.Unlock()
		})
		defer stop()
	}
	for g.leading && !m.done && (m.taken || ctx.Err() == nil) {
		g.cond.Wait()
	}
	if m.done {
		g.mu.Unlock()
		return nil
	}
	if !m.taken && ctx.Err() != nil { // no leader took v: it leaves the queue
		for i, q := range g.queue {
			if q == m {
				g.queue = append(g.queue[:i], g.queue[i+1:]...)
				break
			}
		}
		g.mu.Unlock()
		return ctx.Err()
	}
	g.leading = true
	queued := g.queue
	g.queue = nil
	for _, q := range queued {
		q.taken = true
	}
	g.mu.Unlock()

	batch := make([]T, len(queued))
	for i, q := range queued {
		batch[i] = q.v
	}
	flush(batch)

	g.mu.Lock()
	for _, q := range queued {
		q.done = true
	}
	g.leading = false
	g.cond.Broadcast()
	g.mu.Unlock()
	return nil
}

// Queued returns the number of writes waiting for a leader.
func (g *Group[T]) Queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// Exclusive runs fn with no batch in flight and none starting.
func (g *Group[T]) Exclusive(fn func() error) error {
	g.mu.Lock()
	g.init()
	for g.leading {
		g.cond.Wait()
	}
	g.leading = true
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.leading = false
		g.cond.Broadcast()
		g.mu.Unlock()
	}()
	return fn()
}
