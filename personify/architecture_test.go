package personify

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
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
	"internal/sample":          {"anonymize", "personify"},
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
			// Nested modules (bench, pgstore, examples), commands and test
			// data are not rooms of the core.
			switch {
			case rel == "bench" || rel == "pgstore" || rel == "examples" || rel == "cmd",
				d.Name() == "testdata", rel != "." && strings.HasPrefix(d.Name(), "."):
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

// Every exported field of an exported struct of the libraries (core and
// pgstore) names its JSON in snake_case, or is left out ("-"), unless the
// type marshals itself: so that JSON of every exported type is consistent,
// including types added later.
func TestJSONFieldsAreSnakeCase(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	snake := regexp.MustCompile(`^[a-z0-9]+(_[a-z0-9]+)*$`)
	checked := 0
	for _, dir := range []string{"anonymize", "segment", "personify", "personify/replica", "pgstore"} { // internal/ is not the API
		fset := token.NewFileSet()
		files, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
		require.NoError(t, err)
		var parsed []*ast.File
		marshals := map[string]bool{} // types with their own MarshalJSON
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
			require.NoError(t, err)
			parsed = append(parsed, af)
			for _, d := range af.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv != nil && fd.Name.Name == "MarshalJSON" {
					typ := fd.Recv.List[0].Type
					if st, ok := typ.(*ast.StarExpr); ok {
						typ = st.X
					}
					if id, ok := typ.(*ast.Ident); ok {
						marshals[id.Name] = true
					}
				}
			}
		}
		for _, af := range parsed {
			ast.Inspect(af, func(n ast.Node) bool {
				ts, ok := n.(*ast.TypeSpec)
				if !ok || !ts.Name.IsExported() || marshals[ts.Name.Name] {
					return true
				}
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					return true
				}
				for _, f := range st.Fields.List {
					if len(f.Names) == 0 || !f.Names[0].IsExported() {
						continue // embedded fields flatten; unexported ones are not marshalled
					}
					tag := ""
					if f.Tag != nil {
						raw, _ := strconv.Unquote(f.Tag.Value)
						tag = reflect.StructTag(raw).Get("json")
					}
					name, _, _ := strings.Cut(tag, ",")
					checked++
					assert.True(t, name == "-" || snake.MatchString(name), "%s: %s.%s has json name %q: want snake_case or \"-\"",
						dir, ts.Name.Name, f.Names[0].Name, name)
				}
				return true
			})
		}
	}
	assert.Greater(t, checked, 50, "the walk found the structs")
}

// Every exported type's doc says what its zero value is and whether it is
// safe for concurrent use (STYLE.md item 4).
func TestTypeDocsSayZeroValueAndConcurrency(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	checked := 0
	for _, dir := range []string{"anonymize", "segment", "personify", "personify/replica", "pgstore"} {
		files, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
		require.NoError(t, err)
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ParseComments|parser.SkipObjectResolution)
			require.NoError(t, err)
			for _, d := range af.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.TYPE {
					continue
				}
				for _, sp := range gd.Specs {
					ts := sp.(*ast.TypeSpec)
					if !ts.Name.IsExported() {
						continue
					}
					doc := ts.Doc
					if doc == nil {
						doc = gd.Doc
					}
					text := strings.ToLower(doc.Text())
					checked++
					assert.True(t, strings.Contains(text, "zero"), "%s.%s: the doc does not say what its zero value is", dir, ts.Name.Name)
					assert.True(t, strings.Contains(text, "concurren") || strings.Contains(text, "goroutine"),
						"%s.%s: the doc does not say whether it is safe for concurrent use", dir, ts.Name.Name)
				}
			}
		}
	}
	assert.Greater(t, checked, 30, "the walk found the types")
}
