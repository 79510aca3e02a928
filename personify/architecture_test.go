package personify

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The rooms and what each may import of the module (ARCHITECTURE.md draws
// the same arrows): lower rooms never reach up into higher ones, and the
// mechanisms under internal/ know nothing of the engine.
var rooms = map[string][]string{
	"anonymize":                {},
	"segment":                  {},
	"personify/internal/index": {"anonymize"},
	"personify/internal/wal":   {},
	"personify/internal/fleet": {"anonymize"},
	"personify":                {"anonymize", "segment", "personify/internal/index", "personify/internal/wal", "personify/internal/fleet"},
	"personify/replica":        {"anonymize", "personify", "personify/internal/fleet"},
}

const module = "github.com/personify-go/personify/"

func TestRoomsImportOnlyDownward(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	seen := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			// Nested modules (bench, pgstore, examples) and test data are not rooms of the core.
			if rel != "." && (strings.HasPrefix(rel, "bench") || strings.HasPrefix(rel, "pgstore") || strings.HasPrefix(rel, "examples") ||
				strings.HasPrefix(rel, "cmd") || strings.Contains(rel, "testdata") || strings.HasPrefix(rel, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		allowed, ok := rooms[rel]
		if !assert.True(t, ok, "package %s is not a room of ARCHITECTURE.md (add it to rooms)", rel) {
			return nil
		}
		seen[rel] = true
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		require.NoError(t, err)
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if dep, ok := strings.CutPrefix(p, module); ok {
				assert.True(t, slices.Contains(allowed, dep), "%s imports %s, which is not below it", filepath.Base(path), dep)
			}
		}
		return nil
	})
	require.NoError(t, err)
	for _, r := range []string{"anonymize", "segment", "personify", "personify/internal/index", "personify/internal/wal", "personify/internal/fleet", "personify/replica"} {
		assert.True(t, seen[r], "room %s has no files", r)
	}
}

// No non-test file is over about 500 lines: one mechanism a file.
func TestFilesStaySmall(t *testing.T) {
	for _, dir := range []string{".", "internal/index", "internal/wal", "internal/fleet", "replica"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			assert.LessOrEqual(t, strings.Count(string(b), "\n"), 520, "%s", f)
		}
	}
}
