package personify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// kick asks maintenance for a compaction now (the log has grown).
func (s *store) kick() {
	select {
	case s.grow <- struct{}{}:
	default:
	}
}

// requestPurge asks maintenance for a compaction by due (an erasure's
// engine.schedulePurge); the earliest request wins.
func (s *store) requestPurge(due time.Time) {
	s.pmu.Lock()
	if s.purgeReq.IsZero() || due.Before(s.purgeReq) {
		s.purgeReq = due
	}
	s.pmu.Unlock()
	select {
	case s.purge <- struct{}{}:
	default:
	}
}

// takePurgeRequest returns and clears the earliest requested time.
func (s *store) takePurgeRequest() time.Time {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	t := s.purgeReq
	s.purgeReq = time.Time{}
	return t
}

// maintain runs retention, key expiry and compaction until Close. A
// compaction for erasures runs when the earliest pending one is due (a
// quarter of its window after the Forget, so that the window's erasures
// share one snapshot); the pending erasures are part of the state, so this
// holds across restarts. A failed compaction is retried a second later.
func (s *store) maintain(e *Engine) {
	defer close(s.stopped)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var armed time.Time // when timer fires; zero: stopped
	arm := func(due time.Time) {
		if !armed.IsZero() && !due.Before(armed) {
			return
		}
		armed = due
		timer.Reset(max(due.Sub(e.now()), 0))
	}
	rearm := func() {
		if due, ok := s.nextPurge(e); ok {
			arm(due)
		}
	}
	if req := s.takePurgeRequest(); !req.IsZero() {
		arm(req)
	}
	rearm()
	for {
		select {
		case <-s.stop:
			timer.Stop()
			return
		case <-s.purge:
			if req := s.takePurgeRequest(); !req.IsZero() {
				arm(req)
			}
		case <-timer.C:
			armed = time.Time{}
			if err := s.compactIfNeeded(e, true); err != nil {
				arm(e.now().Add(time.Second))
				continue
			}
			rearm() // erasures that arrived during the compaction
		case <-s.grow:
			_ = s.compactIfNeeded(e, false)
		case <-t.C:
			if _, err := e.Expire(e.now()); err != nil && !errors.Is(err, ErrClosed) {
				s.warn("expire", err)
			}
			due, pending := s.nextPurge(e)
			_ = s.compactIfNeeded(e, pending && !due.After(e.now()))
			rearm()
		}
	}
}

func (s *store) compactIfNeeded(e *Engine, asked bool) error {
	unlock := e.lockFlush() // before the exclusive section: see lockFlush
	defer unlock()
	err := s.exclusive(func() error {
		if e.closed.Load() {
			return nil
		}
		if s.seq == s.snapSeq && s.log.Start() == s.snapSeq+1 { // the newest snapshot holds everything
			s.markPurged(e)
			if s.purged.Load() < s.snapSeq {
				return fmt.Errorf("personify: older files in %s could not be removed", s.dir.Path())
			}
			return nil
		}
		if !asked && s.log.Size() < s.compactAt {
			return nil
		}
		return s.compactLocked(e)
	})
	if err != nil {
		s.warn("compact", err)
	}
	return err
}

func (s *store) warn(what string, err error) {
	s.audit.LogAttrs(context.Background(), slog.LevelWarn, "personify."+what+"_failed", slog.String("error", err.Error()))
}
