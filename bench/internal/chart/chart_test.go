package chart_test

import (
	"bytes"
	"encoding/xml"
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/personify-go/personify/bench/internal/chart"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// node is a generic XML element, enough to inspect the SVG structurally.
type node struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []node     `xml:",any"`
}

func (n node) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func (n node) num(tb testing.TB, name string) float64 {
	tb.Helper()
	f, err := strconv.ParseFloat(n.attr(name), 64)
	require.NoError(tb, err, "attribute %s of <%s>", name, n.XMLName.Local)
	return f
}

// find returns, in document order, the elements named tag with class class.
func (n node) find(tag, class string) []node {
	var out []node
	if n.XMLName.Local == tag && n.attr("class") == class {
		out = append(out, n)
	}
	for _, c := range n.Children {
		out = append(out, c.find(tag, class)...)
	}
	return out
}

func texts(ns []node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Text
	}
	return out
}

// render draws bars and parses the result, failing tb if either fails.
func render(tb testing.TB, title, unit string, bars []chart.Bar) (node, []byte) {
	tb.Helper()
	var buf bytes.Buffer
	require.NoError(tb, chart.SVG(&buf, title, unit, bars))
	var root node
	require.NoError(tb, xml.Unmarshal(buf.Bytes(), &root), "output is not well-formed XML:\n%s", buf.String())
	return root, buf.Bytes()
}

// report is shaped like the real one: personify next to its baselines.
var report = []chart.Bar{
	{Label: "segment.Contains", Value: 12.34, Group: "personify"},
	{Label: "map[string]struct{}", Value: 25, Group: "baseline"},
	{Label: "audience eval", Value: 1234, Group: "personify"},
	{Label: "redis SISMEMBER", Value: 31_500, Group: "redis"},
	{Label: "redis SISMEMBER x16", Value: 799_999, Group: "redis"},
}

func TestSVGStructure(t *testing.T) {
	root, raw := render(t, "Segment lookups", "ns", report)
	require.Equal(t, "svg", root.XMLName.Local)
	assert.Equal(t, "http://www.w3.org/2000/svg", root.XMLName.Space)
	assert.Equal(t, "900", root.attr("width"))
	assert.Equal(t, "sans-serif", root.attr("font-family"))
	assert.Equal(t, strconv.Itoa(72+len(report)*28+32), root.attr("height"))

	assert.Equal(t, []string{"Segment lookups"}, texts(root.find("text", "title")))
	assert.Equal(t, []string{"segment.Contains", "map[string]struct{}", "audience eval", "redis SISMEMBER", "redis SISMEMBER x16"},
		texts(root.find("text", "label")))
	assert.Equal(t, []string{"12.3 ns", "25 ns", "1.23 µs", "31.5 µs", "800 µs"}, texts(root.find("text", "value")))
	assert.Equal(t, []string{"10 ns", "100 ns", "1 µs", "10 µs", "100 µs", "1 ms"}, texts(root.find("text", "tick")))
	assert.Len(t, root.find("line", "tick"), 6)

	assert.Len(t, root.find("rect", "bar"), len(report), "one rect per bar")
	assert.Len(t, root.find("rect", "legend"), 3, "one rect per group")
	assert.Len(t, root.find("rect", "background"), 1)
	assert.Equal(t, []string{"personify", "baseline", "redis"}, texts(root.find("text", "legend")),
		"legend in order of first appearance")
	body := strings.ReplaceAll(string(raw), `xmlns="http://www.w3.org/2000/svg"`, "")
	for _, ref := range []string{"href", "http", "url(", "@import"} {
		assert.NotContains(t, body, ref, "no external resources")
	}
}

func TestSVGRowsInOrder(t *testing.T) {
	root, _ := render(t, "t", "ns", report)
	bars, labels := root.find("rect", "bar"), root.find("text", "label")
	for i := 1; i < len(bars); i++ {
		assert.InDelta(t, 28, bars[i].num(t, "y")-bars[i-1].num(t, "y"), 0.01, "row height")
		assert.Greater(t, labels[i].num(t, "y"), labels[i-1].num(t, "y"))
	}
}

func TestSVGGroupColours(t *testing.T) {
	root, _ := render(t, "t", "ns", []chart.Bar{
		{Label: "a", Value: 1, Group: "x"},
		{Label: "b", Value: 2, Group: "y"},
		{Label: "c", Value: 3, Group: "x"},
		{Label: "d", Value: 4}, // no group: coloured, not in the legend
	})
	bars, legend := root.find("rect", "bar"), root.find("rect", "legend")
	require.Len(t, legend, 2)
	assert.Equal(t, bars[0].attr("fill"), bars[2].attr("fill"))
	assert.NotEqual(t, bars[0].attr("fill"), bars[1].attr("fill"))
	assert.NotEqual(t, bars[1].attr("fill"), bars[3].attr("fill"))
	assert.Equal(t, bars[0].attr("fill"), legend[0].attr("fill"))
	assert.Equal(t, bars[1].attr("fill"), legend[1].attr("fill"))
}

func TestSVGEscapes(t *testing.T) {
	const label, group, title = `a & b <c> "d"`, `x's & y`, `<T&>`
	root, raw := render(t, title, "ns", []chart.Bar{{Label: label, Value: 10, Group: group}})
	assert.Contains(t, string(raw), "a &amp; b &lt;c&gt; &#34;d&#34;")
	assert.NotContains(t, string(raw), "a & b")
	assert.Equal(t, []string{label}, texts(root.find("text", "label")))
	assert.Equal(t, []string{group}, texts(root.find("text", "legend")))
	assert.Equal(t, []string{title}, texts(root.find("text", "title")))
}

func TestSVGLogScale(t *testing.T) {
	root, _ := render(t, "t", "ns", []chart.Bar{
		{Label: "ten", Value: 10},
		{Label: "hundred", Value: 100},
		{Label: "thousand", Value: 1000},
		{Label: "three hundred", Value: 300},
	})
	bars := root.find("rect", "bar")
	w := make([]float64, len(bars))
	for i, b := range bars {
		w[i] = b.num(t, "width")
	}
	ticks := root.find("line", "tick")
	require.Len(t, ticks, 4, "1, 10, 100 and 1000 ns")
	decade := ticks[1].num(t, "x1") - ticks[0].num(t, "x1")
	require.Positive(t, decade)

	const tol = 0.15 // coordinates are printed to 0.1 px
	assert.InDelta(t, decade, w[0], tol, "10 spans one decade above the 1 ns origin")
	assert.InDelta(t, 2*decade, w[2]-w[0], tol, "1000 is two decades wider than 10")
	assert.InDelta(t, decade, w[1]-w[0], tol)
	assert.InDelta(t, math.Log10(3)*decade, w[3]-w[1], tol, "300 is log10(3) of a decade past 100")
	assert.InDelta(t, ticks[3].num(t, "x1"), bars[2].num(t, "x")+w[2], tol, "1000 ends on the last tick")
}

func TestSVGUnits(t *testing.T) {
	root, _ := render(t, "t", "B/op", []chart.Bar{{Label: "a", Value: 48}, {Label: "b", Value: 1234}})
	assert.Equal(t, []string{"48 B/op", "1230 B/op"}, texts(root.find("text", "value")))
	assert.Equal(t, []string{"10 B/op", "100 B/op", "1000 B/op", "10000 B/op"}, texts(root.find("text", "tick")))
}

func TestSVGManyDecadesThinsTickLabels(t *testing.T) {
	root, _ := render(t, "t", "ns", []chart.Bar{{Label: "a", Value: 0.005}, {Label: "b", Value: 5e11}})
	lines, labels := root.find("line", "tick"), root.find("text", "tick")
	assert.Len(t, lines, 16, "1 ps to 1000 s")
	assert.Less(t, len(labels), len(lines))
	for i := 1; i < len(labels); i++ {
		assert.GreaterOrEqual(t, labels[i].num(t, "x")-labels[i-1].num(t, "x"), 56.0, "labels overlap")
	}
}

func TestSVGLongTextStaysInside(t *testing.T) {
	long := strings.Repeat("very long benchmark name ", 10)
	bars := []chart.Bar{{Label: long, Value: 10, Group: long}, {Label: "b", Value: 999_999_999, Group: "other"}}
	for i := range 12 {
		bars = append(bars, chart.Bar{Label: "g", Value: 50, Group: "group number " + strconv.Itoa(i)})
	}
	root, _ := render(t, long, "B/op", bars)

	labels := texts(root.find("text", "label"))
	assert.True(t, strings.HasSuffix(labels[0], "…"), "long labels are shortened: %q", labels[0])
	assert.True(t, strings.HasPrefix(long, strings.TrimSuffix(labels[0], "…")))
	assert.LessOrEqual(t, 7*len([]rune(labels[0])), 360)

	legend := root.find("rect", "legend")
	require.Len(t, legend, 14)
	rows := map[string]bool{}
	for _, r := range legend {
		assert.LessOrEqual(t, r.num(t, "x"), 888.0)
		rows[r.attr("y")] = true
	}
	assert.Greater(t, len(rows), 1, "the legend wraps")
	lastLegendY := legend[len(legend)-1].num(t, "y")
	assert.Greater(t, root.find("rect", "bar")[0].num(t, "y"), lastLegendY+12, "rows start below the legend")

	for _, v := range root.find("text", "value") {
		// A value label must end inside the image, at the estimated 7 px a character.
		assert.LessOrEqual(t, v.num(t, "x")+float64(7*len([]rune(v.Text))), 900.0, "%q", v.Text)
	}
}

func TestSVGExtremeValues(t *testing.T) {
	_, raw := render(t, "t", "ns", []chart.Bar{{Label: "tiny", Value: 5e-324}, {Label: "huge", Value: math.MaxFloat64}})
	assert.NotContains(t, string(raw), "Inf")
	assert.NotContains(t, string(raw), "NaN")
}

func TestSVGDeterministic(t *testing.T) {
	many := make([]chart.Bar, 0, 40)
	for i := range 40 {
		many = append(many, chart.Bar{Label: "bar " + strconv.Itoa(i), Value: float64(i+1) * 997, Group: "g" + strconv.Itoa(i%13)})
	}
	_, first := render(t, "t", "ns", many)
	for range 10 {
		_, again := render(t, "t", "ns", many)
		require.Equal(t, first, again)
	}
}

func TestSVGErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		bars []chart.Bar
		want string
	}{
		{"nil", nil, "chart: no bars"},
		{"empty", []chart.Bar{}, "chart: no bars"},
		{"zero", []chart.Bar{{Label: "z", Value: 0}}, `chart: bar "z": value 0 is not positive`},
		{"negative", []chart.Bar{{Label: "ok", Value: 1}, {Label: "n", Value: -3}}, `bar "n": value -3`},
		{"nan", []chart.Bar{{Label: "nan", Value: math.NaN()}}, "NaN"},
		{"inf", []chart.Bar{{Label: "inf", Value: math.Inf(1)}}, "+Inf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := chart.SVG(&buf, "t", "ns", tc.bars)
			require.ErrorContains(t, err, tc.want)
			assert.Zero(t, buf.Len(), "nothing is written on error")
		})
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func TestSVGWriteError(t *testing.T) {
	boom := errors.New("disk full")
	err := chart.SVG(failingWriter{boom}, "t", "ns", report)
	require.ErrorIs(t, err, boom)
	assert.True(t, strings.HasPrefix(err.Error(), "chart: "))
}

// FuzzSVG checks that any drawable input yields well-formed XML.
func FuzzSVG(f *testing.F) {
	f.Add("label", "group", "title", "ns", 12.5)
	f.Add("a & <b>", "", "\x00\xff", "µs", 1e-9)
	f.Add("]]>", "'\"", "", "", 1e300)
	f.Fuzz(func(t *testing.T, label, group, title, unit string, v float64) {
		var buf bytes.Buffer
		err := chart.SVG(&buf, title, unit, []chart.Bar{{Label: label, Value: v, Group: group}, {Label: "x", Value: 1}})
		if !(v > 0) || math.IsInf(v, 1) {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		var root node
		require.NoError(t, xml.Unmarshal(buf.Bytes(), &root))
	})
}

func ExampleSVG() {
	err := chart.SVG(os.Stdout, "Lookup", "ns", []chart.Bar{
		{Label: "personify", Value: 15, Group: "personify"},
		{Label: "redis", Value: 25_000, Group: "baseline"},
	})
	if err != nil {
		panic(err)
	}
	// Output:
	// <svg xmlns="http://www.w3.org/2000/svg" width="900" height="160" viewBox="0 0 900 160" font-family="sans-serif" font-size="12" fill="#222222">
	// <title>Lookup</title>
	// <rect class="background" width="900" height="160" fill="#ffffff"/>
	// <text class="title" x="12" y="28" font-size="16" font-weight="bold">Lookup</text>
	// <text class="note" x="888" y="28" text-anchor="end" fill="#666666">log scale</text>
	// <g class="legend">
	// <rect class="legend" x="12" y="46" width="12" height="12" fill="#4e79a7"/>
	// <text class="legend" x="30" y="56">personify</text>
	// <rect class="legend" x="111" y="46" width="12" height="12" fill="#f28e2b"/>
	// <text class="legend" x="129" y="56">baseline</text>
	// </g>
	// <g class="axis">
	// <line class="tick" x1="83.0" y1="68" x2="83.0" y2="132" stroke="#dddddd" stroke-width="1"/>
	// <text class="tick" x="83.0" y="146" text-anchor="middle" fill="#666666">10 ns</text>
	// <line class="tick" x1="269.2" y1="68" x2="269.2" y2="132" stroke="#dddddd" stroke-width="1"/>
	// <text class="tick" x="269.2" y="146" text-anchor="middle" fill="#666666">100 ns</text>
	// <line class="tick" x1="455.5" y1="68" x2="455.5" y2="132" stroke="#dddddd" stroke-width="1"/>
	// <text class="tick" x="455.5" y="146" text-anchor="middle" fill="#666666">1 µs</text>
	// <line class="tick" x1="641.8" y1="68" x2="641.8" y2="132" stroke="#dddddd" stroke-width="1"/>
	// <text class="tick" x="641.8" y="146" text-anchor="middle" fill="#666666">10 µs</text>
	// <line class="tick" x1="828.0" y1="68" x2="828.0" y2="132" stroke="#dddddd" stroke-width="1"/>
	// <text class="tick" x="828.0" y="146" text-anchor="middle" fill="#666666">100 µs</text>
	// </g>
	// <g class="bars">
	// <text class="label" x="75" y="90.0" text-anchor="end">personify</text>
	// <rect class="bar" x="83.0" y="77.0" width="32.8" height="18" fill="#4e79a7"/>
	// <text class="value" x="121.8" y="90.0">15 ns</text>
	// <text class="label" x="75" y="118.0" text-anchor="end">redis</text>
	// <rect class="bar" x="83.0" y="105.0" width="632.9" height="18" fill="#f28e2b"/>
	// <text class="value" x="721.9" y="118.0">25 µs</text>
	// </g>
	// </svg>
}
