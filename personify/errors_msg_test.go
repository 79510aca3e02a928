package personify

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify/internal/wal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// openFailFS fails opening files whose name ends in suffix, and listing
// the directory when dirFail is set.
type openFailFS struct {
	wal.OS
	suffix  string
	dirFail bool
}

func (f *openFailFS) OpenFile(name string, flag int, perm os.FileMode) (wal.File, error) {
	if f.suffix != "" && strings.HasSuffix(name, f.suffix) {
		return nil, &os.PathError{Op: "open", Path: name, Err: errors.New("permission denied")}
	}
	return f.OS.OpenFile(name, flag, perm)
}

func (f *openFailFS) ReadDir(name string) ([]os.DirEntry, error) {
	if f.dirFail {
		return nil, &os.PathError{Op: "readdirent", Path: name, Err: errors.New("input/output error")}
	}
	return f.OS.ReadDir(name)
}

// Errors of the storage paths read as one sentence each: the package's
// prefix once, the outcome once, every file named once, and a string that
// is not a valid name never echoed.
func TestStorageErrorsReadOnce(t *testing.T) {
	msgs := map[string]error{}
	d := newDurableEnv(t)
	fs := &faultFS{budget: -1}
	e, err := Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1, fs: fs}))
	require.NoError(t, err)
	workload(t, e, d.clock, 10)
	fs.set(10, false)
	msgs["disk full"] = e.Add("runners", person(5000))
	fs.set(-1, true)
	msgs["fsync"] = e.Add("runners", person(5001))
	fs.set(-1, false)
	var buf bytes.Buffer
	_, err = e.WriteSnapshot(&buf)
	require.NoError(t, err)
	fs.set(10, false)
	msgs["LoadSnapshot save"] = e.LoadSnapshot(bytes.NewReader(buf.Bytes()))
	msgs["write after unsaved LoadSnapshot"] = e.Add("runners", person(5002))
	msgs["Compact"] = e.Compact()
	fs.set(-1, false)
	msgs["invalid segment name"] = func() error { _, err := e.Segment("ann@example.com"); return err }()
	msgs["invalid purpose name"] = func() error { _, err := e.Purpose("ann@example.com"); return err }()
	msgs["Len of an invalid name"] = func() error { _, err := e.Len("ann@example.com"); return err }()
	require.NoError(t, e.Close())
	for name, fs := range map[string]*openFailFS{
		"snapshot unreadable":  {suffix: ".pfy"},
		"log unreadable":       {suffix: ".wal"},
		"directory unreadable": {dirFail: true},
	} {
		_, msgs[name] = Open(d.dir, durable(d.opts, DurableOptions{MaintenanceInterval: -1, fs: fs}))
	}
	other := d.opts
	other.Key = anonymize.GenerateKey()
	_, msgs["snapshot under another key"] = Open(d.dir, durable(other, DurableOptions{MaintenanceInterval: -1}))

	// A log under another key after this directory's snapshot.
	d2, d3 := newDurableEnv(t), newDurableEnv(t)
	d2.opts.Key = other.Key
	require.NoError(t, d2.open(t).Close())
	require.NoError(t, d3.open(t).Close())
	foreign, err := os.ReadFile(filepath.Join(d2.dir, "log-0000000000000001.wal"))
	require.NoError(t, err)
	ownLog := filepath.Join(d3.dir, "log-0000000000000001.wal")
	require.NoError(t, os.WriteFile(ownLog, foreign, 0o600))
	_, msgs["log under another key"] = Open(d3.dir, durable(d3.opts, DurableOptions{MaintenanceInterval: -1}))
	require.NoError(t, os.Remove(ownLog))
	_, msgs["missing log"] = Open(d3.dir, durable(d3.opts, DurableOptions{MaintenanceInterval: -1}))

	for what, err := range msgs {
		require.Error(t, err, what)
		m := err.Error()
		t.Logf("%s: %s", what, m)
		assert.True(t, strings.HasPrefix(m, "personify: "), "%s: %s", what, m)
		assert.Equal(t, 1, strings.Count(m, "personify:"), "%s: %s", what, m)
		assert.LessOrEqual(t, strings.Count(m, "the change was not made"), 1, "%s: %s", what, m)
		assert.NotContains(t, m, "ann@example.com", what)
		for _, f := range []string{"snapshot-", "log-"} {
			if i := strings.Index(m, f); i >= 0 {
				file := m[i : i+len(f)+16]
				assert.Equal(t, 1, strings.Count(m, file), "%s names %s once: %s", what, file, m)
			}
		}
	}
	assert.ErrorIs(t, msgs["disk full"], errWrite)
	assert.ErrorIs(t, msgs["write after unsaved LoadSnapshot"], errWrite)
	assert.ErrorIs(t, msgs["snapshot under another key"], ErrWrongKey)
	assert.ErrorIs(t, msgs["log under another key"], ErrWrongKey)
	assert.ErrorIs(t, msgs["missing log"], ErrCorrupt)
	assert.Contains(t, msgs["missing log"].Error(), "snapshot-0000000000000000.pfy", "names the snapshot that needs the log")
	assert.ErrorIs(t, msgs["invalid segment name"], ErrUnknownSegment)
}
