package personify

import (
	"context"
	"encoding/json"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every exported type's JSON uses snake_case names.
func TestJSONIsSnakeCase(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads", Retention: time.Hour})
	te.add("runners", people(0, 5)...)
	rep, err := te.Explain(person(1))
	require.NoError(t, err)
	rc, err := te.ForgetWith(person(2), ForgetOptions{RequestID: "ticket-1"})
	require.NoError(t, err)
	aud, err := te.Audience("runners", "ads")
	require.NoError(t, err)
	snake := regexp.MustCompile(`^[a-z0-9_]+$`)
	var keys func(v any, path string)
	keys = func(v any, path string) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				assert.Regexp(t, snake, k, "%s.%s", path, k)
				keys(x, path+"."+k)
			}
		case []any:
			for _, x := range v {
				keys(x, path+"[]")
			}
		}
	}
	for name, v := range map[string]any{
		"Report": rep, "Receipt": rc, "Stats": te.Stats(), "Segment": Segment{Name: "x"}, "Purpose": Purpose{Name: "x"},
		"Audience": aud, "ForgetOptions": ForgetOptions{RequestID: "t"}, "PreviousKey": PreviousKey{Key: anonymize.GenerateKey(), Until: t0},
		"KeyInfo": anonymize.KeyInfo{Until: t0}, "IdentifierError": anonymize.IdentifierError{},
	} {
		b, err := json.Marshal(v)
		require.NoError(t, err, name)
		var m any
		require.NoError(t, json.Unmarshal(b, &m), name)
		keys(m, name)
	}
}

// A context that is done before a write is logged changes nothing, in
// memory and on disk; the plain forms are the Context forms with
// context.Background.
func TestContextBoundsWrites(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := newDurableEnv(t)
	e := d.open(t)
	defer e.Close()
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	before := stateDump(t, e)
	for name, err := range map[string]error{
		"add":      e.AddContext(ctx, "runners", person(1)),
		"bulk":     e.AddPseudonymsContext(ctx, "runners", []anonymize.Pseudonym{7}),
		"consent":  e.SetConsentContext(ctx, person(1), "ads", false),
		"suppress": e.SuppressContext(ctx, person(1)),
		"define":   e.DefineContext(ctx, Segment{Name: "x", Purpose: "ads"}),
		"forget":   func() error { _, err := e.ForgetContext(ctx, person(1), ForgetOptions{}); return err }(),
		"rotate":   e.RotateKeyContext(ctx, anonymize.GenerateKey(), time.Hour),
	} {
		require.ErrorIs(t, err, context.Canceled, name)
		require.ErrorIs(t, err, errWrite, name)
	}
	assert.Equal(t, before, stateDump(t, e), "nothing changed")
	require.NoError(t, e.AddContext(context.Background(), "runners", person(1)))
	require.NoError(t, e.Close())
	e = d.open(t)
	defer e.Close()
	p := e.mustPseudonym(t, person(1))
	assert.True(t, e.In(p, "runners"))
}

// A durable write waiting in the queue (here behind a compaction) gives up
// when its context ends, and is neither logged nor applied.
func TestContextBoundsQueuedDurableWrite(t *testing.T) {
	d := newDurableEnv(t)
	e := d.open(t)
	require.NoError(t, e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}))
	require.NoError(t, e.Define(Segment{Name: "runners", Purpose: "ads"}))
	hold, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- e.store.exclusive(func() error { close(hold); <-release; return nil })
	}()
	<-hold
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.AddContext(ctx, "runners", person(1)) }()
	for e.store.group.Queued() == 0 { // the write waits behind the compaction
		runtime.Gosched()
	}
	cancel()
	err := <-errc
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, err, errWrite)
	close(release)
	require.NoError(t, <-held)
	p := e.mustPseudonym(t, person(1))
	assert.False(t, e.In(p, "runners"))
	require.NoError(t, e.Close())
	e = d.open(t)
	defer e.Close()
	assert.False(t, e.In(p, "runners"), "nor logged")
}

// cancelAfterAppend is a journal that ends the writer's context once the
// change is stored, as a deadline passing at that moment would.
type cancelAfterAppend struct {
	*manualJournal
	cancel context.CancelFunc
}

func (j cancelAfterAppend) Append(ctx context.Context, change []byte, seal func(uint64, []byte) []byte) (uint64, error) {
	seq, err := j.manualJournal.Append(ctx, change, seal)
	j.cancel()
	return seq, err
}

// A fleet write whose context ends after the append says its outcome is
// the journal's, not that it failed.
func TestContextOnReplicaWrite(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	j := &manualJournal{}
	e, err := NewReplica(Options{Key: mustKey(t, testKeyHex), K: 1}, cancelAfterAppend{j, cancel}, ReplicaOptions{WriteTimeout: time.Minute})
	require.NoError(t, err)
	defer e.Close()
	err = e.DefinePurposeContext(ctx, Purpose{Name: "ads", Model: OptOut}) // nobody delivers the journal
	require.ErrorIs(t, err, ErrNotAppliedForTests)
	require.ErrorIs(t, err, context.Canceled)
	assert.Len(t, j.log, 1, "the change is in the journal")
	require.NoError(t, j.deliver(e))
	_, err = e.Purpose("ads")
	require.NoError(t, err, "it took effect when the journal was applied")
}

// A misspelled name is discoverable without slowing lookups down.
func TestPurposeAndSegmentLookups(t *testing.T) {
	te := newTestEngine(t)
	te.define(Segment{Name: "runners", Purpose: "ads"})
	_, err := te.Purpose("adz")
	require.ErrorIs(t, err, ErrUnknownPurpose)
	assert.Contains(t, err.Error(), `did you mean "ads"`)
	p, err := te.Purpose("ads")
	require.NoError(t, err)
	assert.Equal(t, OptOut, p.Model)
	_, err = te.Segment("runner")
	require.ErrorIs(t, err, ErrUnknownSegment)
	assert.Contains(t, err.Error(), `did you mean "runners"`)
}

// Errors say "personify:" once, and Open names what is wrong with its
// argument.
func TestErrorsSayTheirPrefixOnce(t *testing.T) {
	te := newTestEngine(t)
	for _, err := range []error{
		te.Define(Segment{Name: "x", Purpose: "nope"}),
		te.Define(Segment{Name: "x", Purpose: "no pe"}),
		func() error { _, err := te.Audience("nope", "ads"); return err }(),
		te.Add("nope", person(1)),
		func() error { _, err := Open("", Options{Key: anonymize.GenerateKey()}); return err }(),
	} {
		require.Error(t, err)
		assert.Equal(t, 1, strings.Count(err.Error(), "personify:"), err.Error())
	}
	_, err := Open("", Options{Key: anonymize.GenerateKey()})
	assert.Contains(t, err.Error(), "the directory is empty")
	err = te.Define(Segment{Name: "x", Purpose: "nope"})
	assert.ErrorIs(t, err, ErrUnknownPurpose)
	assert.Contains(t, err.Error(), `segment "x"`)
}
