package segment

import (
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// model is the naive set the tests compare Set against.
type model map[uint32]struct{}

func modelOf(xs ...uint32) model {
	m := model{}
	for _, x := range xs {
		m[x] = struct{}{}
	}
	return m
}

func (m model) sorted() []uint32 {
	return slices.Sorted(maps.Keys(m))
}

// shapes are value distributions: dense ordinals, sparse values, runs.
var shapes = []struct {
	name  string
	limit uint32 // values are drawn from [0, limit)
}{
	{"dense", 3000},
	{"mixed", 300_000},
	{"sparse", 1 << 31},
}

func randomValues(r *rand.Rand, n int, limit uint32) []uint32 {
	xs := make([]uint32, n)
	for i := range xs {
		xs[i] = r.Uint32N(limit)
	}
	return xs
}

// randomSet returns a Set and its model, sometimes with a long run.
func randomSet(r *rand.Rand, n int, limit uint32) (*Set, model) {
	xs := randomValues(r, n, limit)
	if r.IntN(3) == 0 && limit > 10_000 {
		lo := r.Uint32N(limit - 10_000)
		for x := lo; x < lo+5000; x++ {
			xs = append(xs, x)
		}
	}
	s := New(xs...)
	if r.IntN(2) == 0 {
		s.Optimize()
	}
	return s, modelOf(xs...)
}

func requireMatches(t *testing.T, m model, s *Set) {
	t.Helper()
	want := m.sorted()
	require.Equal(t, len(want), s.Len())
	require.Equal(t, len(want) == 0, s.IsEmpty())
	if len(want) == 0 {
		require.Empty(t, s.AppendTo(nil))
	} else {
		require.Equal(t, want, s.AppendTo(nil))
	}
	i := 0
	for x := range s.All() {
		require.Equal(t, want[i], x)
		i++
	}
	require.Equal(t, len(want), i)
	for _, x := range want {
		require.True(t, s.Contains(x), "member %d", x)
	}
}

func TestSetZeroAndNil(t *testing.T) {
	var s Set
	requireMatches(t, model{}, &s)
	require.True(t, s.Add(7))
	require.False(t, s.Add(7))
	requireMatches(t, modelOf(7), &s)

	var n *Set
	assert.False(t, n.Contains(1))
	assert.Zero(t, n.Len())
	assert.True(t, n.IsEmpty())
	assert.Empty(t, n.AppendTo(nil))
	assert.True(t, n.Equal(new(Set)))
	assert.True(t, new(Set).Equal(n))
	assert.Zero(t, n.AndLen(&s))
	assert.False(t, s.Intersects(n))
	assert.True(t, n.Clone().IsEmpty())
	_, ok := n.Min()
	assert.False(t, ok)
	for range n.All() {
		t.Fatal("nil set yielded a member")
	}
}

func TestSetAgainstModel(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(shape.limit)))
			s, m := new(Set), model{}
			for step := range 3000 {
				x := r.Uint32N(shape.limit)
				switch op := r.IntN(10); {
				case op < 4:
					_, had := m[x]
					require.Equal(t, !had, s.Add(x))
					m[x] = struct{}{}
				case op < 6:
					_, had := m[x]
					require.Equal(t, had, s.Remove(x))
					delete(m, x)
				case op < 7:
					xs := randomValues(r, r.IntN(2000), shape.limit)
					s.AddMany(xs)
					for _, x := range xs {
						m[x] = struct{}{}
					}
				case op < 8:
					xs := append(randomValues(r, r.IntN(1000), shape.limit), m.sorted()[:len(m)/3]...)
					s.RemoveMany(xs)
					for _, x := range xs {
						delete(m, x)
					}
				default:
					_, had := m[x]
					require.Equal(t, had, s.Contains(x))
				}
				if step%300 == 0 {
					requireMatches(t, m, s)
				}
			}
			requireMatches(t, m, s)
		})
	}
}

func TestAddManyLeavesInputAlone(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, n := range []int{0, 1, 10, sortThreshold - 1, sortThreshold, 5000} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			xs := randomValues(r, n, 1<<20)
			xs = append(xs, xs[:n/4]...) // repeats
			before := slices.Clone(xs)
			s := New(xs...)
			require.Equal(t, before, xs)
			requireMatches(t, modelOf(xs...), s)
			slices.Sort(xs)
			requireMatches(t, modelOf(xs...), New(xs...))
		})
	}
}

func TestRadixSort(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, tc := range []struct {
		name  string
		n     int
		limit uint32
	}{
		{"empty", 0, 10},
		{"one", 1, 10},
		{"one-digit", 1000, 1 << 11},
		{"two-digits", 1000, 1 << 22},
		{"full-range", 5000, 1<<32 - 1},
		{"constant", 100, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			xs := randomValues(r, tc.n, tc.limit)
			if tc.name == "full-range" {
				xs = append(xs, 0, 1<<32-1, 1<<22, 1<<11)
			}
			want := slices.Clone(xs)
			slices.Sort(want)
			radixSort(xs, make([]uint32, len(xs)))
			require.Equal(t, want, xs)
		})
	}
}

func TestMinMaxRange(t *testing.T) {
	s := New()
	_, ok := s.Max()
	require.False(t, ok)
	s.AddRange(10, 20)
	s.AddRange(5, 5) // empty
	s.AddRange(9, 3) // empty
	lo, ok := s.Min()
	require.True(t, ok)
	hi, _ := s.Max()
	require.Equal(t, []uint32{10, 19, 10}, []uint32{lo, hi, uint32(s.Len())})
	s.Add(1<<32 - 1)
	hi, _ = s.Max()
	require.Equal(t, uint32(1<<32-1), hi)
}

func TestSetAlgebra(t *testing.T) {
	ops := []struct {
		name   string
		method func(s, o *Set)
		want   func(a, b model) model
	}{
		{"And", (*Set).And, func(a, b model) model {
			return filter(a, func(x uint32) bool { _, ok := b[x]; return ok })
		}},
		{"Or", (*Set).Or, func(a, b model) model {
			out := maps.Clone(a)
			maps.Copy(out, b)
			return out
		}},
		{"AndNot", (*Set).AndNot, func(a, b model) model {
			return filter(a, func(x uint32) bool { _, ok := b[x]; return !ok })
		}},
		{"Xor", (*Set).Xor, func(a, b model) model {
			out := filter(a, func(x uint32) bool { _, ok := b[x]; return !ok })
			maps.Copy(out, filter(b, func(x uint32) bool { _, ok := a[x]; return !ok }))
			return out
		}},
	}
	r := rand.New(rand.NewPCG(4, 4))
	for _, op := range ops {
		for _, shape := range shapes {
			t.Run(op.name+"/"+shape.name, func(t *testing.T) {
				for range 20 {
					a, am := randomSet(r, r.IntN(3000), shape.limit)
					b, bm := randomSet(r, r.IntN(3000), shape.limit)
					bBefore := b.Clone()
					want := op.want(am, bm)
					wantAnd := len(ops[0].want(am, bm))
					require.Equal(t, wantAnd, a.AndLen(b))
					require.Equal(t, wantAnd > 0, a.Intersects(b))
					op.method(a, b)
					requireMatches(t, want, a)
					require.True(t, b.Equal(bBefore), "argument modified")
				}
			})
		}
		t.Run(op.name+"/nil-and-self", func(t *testing.T) {
			a := New(1, 2, 3)
			op.method(a, nil)
			requireMatches(t, op.want(modelOf(1, 2, 3), model{}), a)
			a = New(1, 2, 3)
			op.method(a, a)
			requireMatches(t, op.want(modelOf(1, 2, 3), modelOf(1, 2, 3)), a)
		})
	}
}

func filter(m model, keep func(uint32) bool) model {
	out := model{}
	for x := range m {
		if keep(x) {
			out[x] = struct{}{}
		}
	}
	return out
}

func TestManyInput(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, n := range []int{0, 1, 2, 3, 7} {
		for _, withNil := range []bool{false, true} {
			t.Run(fmt.Sprintf("sets=%d/nil=%t", n, withNil), func(t *testing.T) {
				var sets, before []*Set
				var models []model
				for i := range n {
					limit := shapes[i%len(shapes)].limit
					s, m := randomSet(r, 2000+r.IntN(2000), min(limit, 5000)) // overlapping
					if i == 1 && withNil {
						s, m = nil, model{}
					}
					sets, models = append(sets, s), append(models, m)
					before = append(before, s.Clone())
				}
				and, or, xor := model{}, model{}, model{}
				counts := map[uint32]int{}
				for _, m := range models {
					for x := range m {
						counts[x]++
					}
				}
				for x, c := range counts {
					if c == len(models) {
						and[x] = struct{}{}
					}
					or[x] = struct{}{}
					if c%2 == 1 {
						xor[x] = struct{}{}
					}
				}
				requireMatches(t, and, And(sets...))
				requireMatches(t, or, Or(sets...))
				requireMatches(t, xor, Xor(sets...))
				for i, s := range sets {
					require.True(t, s.Equal(before[i]), "input %d modified", i)
				}
				if n > 0 && sets[0] != nil {
					require.NotSame(t, sets[0], And(sets[0]))
					require.NotSame(t, sets[0], Or(sets[0]))
				}
			})
		}
	}
}

func TestCloneEqualClear(t *testing.T) {
	a := New(1, 2, 3, 100_000)
	b := a.Clone()
	require.True(t, a.Equal(b))
	b.Add(4)
	require.False(t, a.Equal(b))
	require.False(t, a.Contains(4))
	a.Remove(1)
	require.True(t, b.Contains(1))

	// Equal compares members, not representations.
	run := New()
	for x := range uint32(5000) {
		run.Add(x)
	}
	arr := run.Clone()
	run.Optimize()
	require.True(t, run.Equal(arr))
	require.Less(t, run.SizeBytes(), arr.SizeBytes())

	a.Clear()
	require.True(t, a.IsEmpty())
	require.True(t, a.Add(1))
}

func TestSetAllocs(t *testing.T) {
	s := New(randomValues(rand.New(rand.NewPCG(6, 6)), 10_000, 1<<20)...)
	allocs := testing.AllocsPerRun(100, func() {
		s.Contains(12345)
		s.Len()
	})
	require.Zero(t, allocs)
}

// TestConcurrentReads lets the race detector check that reading a shared
// Set writes nothing, including the many-input functions and encoding.
func TestConcurrentReads(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	a, _ := randomSet(r, 20_000, 1<<20)
	b, _ := randomSet(r, 20_000, 1<<20)
	tm := NewTimed(time.Hour)
	tm.AddSet(a, t0)
	tm.AddSet(b, t0.Add(time.Hour))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				x := uint32(g*i) * 7919
				a.Contains(x)
				_ = And(a, b).Len() + Or(a, b).Len() + Xor(a, b).Len() + a.AndLen(b)
				_ = a.Equal(b) || a.Intersects(b)
				for _, op := range []func(*Set, *Set){(*Set).And, (*Set).Or, (*Set).AndNot, (*Set).Xor} {
					op(a.Clone(), b)
				}
				_, err := a.WriteTo(io.Discard)
				assert.NoError(t, err)
				for range a.All() {
					break
				}
				tm.Contains(x)
				tm.AddedAt(x)
				_ = tm.Clone().ExpireBefore(t0.Add(time.Hour)).Len()
			}
		})
	}
	wg.Wait()
}

// containerShapes builds one container of each kind at key 1 (values
// 65536..131071), plus a value at key 0 so that some keys differ.
var containerShapes = []struct {
	name  string
	build func(r *rand.Rand) *Set
}{
	{"array", func(r *rand.Rand) *Set {
		return New(append(randomValues(r, 300, 1<<16), 1<<16+5, 1<<16+7, 3)...)
	}},
	{"bitmap", func(r *rand.Rand) *Set {
		xs := randomValues(r, 20_000, 1<<16)
		for i := range xs {
			xs[i] += 1 << 16
		}
		return New(xs...)
	}},
	{"run", func(r *rand.Rand) *Set {
		s := New(7)
		lo := 1<<16 + r.Uint32N(1000)
		s.AddRange(lo, lo+30_000)
		s.Optimize()
		return s
	}},
}

// TestInPlaceOwnership checks every in-place operation on every pair of
// container kinds: the result is right, the argument is untouched, and the
// two share no container (changing one afterwards leaves the other alone).
func TestInPlaceOwnership(t *testing.T) {
	ops := map[string]func(a, b *Set){
		"And": (*Set).And, "Or": (*Set).Or, "AndNot": (*Set).AndNot, "Xor": (*Set).Xor,
	}
	keep := map[string]func(inA, inB bool) bool{
		"And":    func(inA, inB bool) bool { return inA && inB },
		"Or":     func(inA, inB bool) bool { return inA || inB },
		"AndNot": func(inA, inB bool) bool { return inA && !inB },
		"Xor":    func(inA, inB bool) bool { return inA != inB },
	}
	r := rand.New(rand.NewPCG(8, 8))
	for name, op := range ops {
		for _, sa := range containerShapes {
			for _, sb := range containerShapes {
				t.Run(name+"/"+sa.name+"-"+sb.name, func(t *testing.T) {
					a, b := sa.build(r), sb.build(r)
					am, bm := modelOf(a.AppendTo(nil)...), modelOf(b.AppendTo(nil)...)
					bBefore := b.AppendTo(nil)
					op(a, b)
					want := model{}
					for _, m := range []model{am, bm} {
						for x := range m {
							_, inA := am[x]
							_, inB := bm[x]
							if keep[name](inA, inB) {
								want[x] = struct{}{}
							}
						}
					}
					requireMatches(t, want, a)
					require.Equal(t, bBefore, b.AppendTo(nil), "argument modified")
					a.AddRange(1<<16, 1<<17)
					a.RemoveMany(randomValues(r, 5000, 1<<17))
					require.Equal(t, bBefore, b.AppendTo(nil), "argument shares a container with the result")
				})
			}
		}
	}
}
