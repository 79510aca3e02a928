package wal

import "sync"

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
	v    T
	done bool
}

func (g *Group[T]) init() {
	if g.cond == nil {
		g.cond = sync.NewCond(&g.mu)
	}
}

// Do queues v and returns once a flush that included it has returned.
// flush runs on the leader's goroutine with the batch, in queue order.
func (g *Group[T]) Do(v T, flush func(batch []T)) {
	m := &member[T]{v: v}
	g.mu.Lock()
	g.init()
	g.queue = append(g.queue, m)
	for g.leading && !m.done {
		g.cond.Wait()
	}
	if m.done {
		g.mu.Unlock()
		return
	}
	g.leading = true
	queued := g.queue
	g.queue = nil
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
