// Package chart renders the benchmark report's bar chart as a standalone SVG
// image, for the README to embed. Call SVG with one Bar per benchmark.
package chart

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"
)

// A Bar is one row of the chart: a labelled, positive value. Bars with the
// same Group share a colour and a legend entry; groups are coloured and
// listed in the order they first appear. The empty Group has a colour but no
// legend entry.
//
// The zero Bar is not drawable, since its Value is not positive. A Bar is a
// plain value, safe to copy and to share between goroutines.
type Bar struct {
	Label string
	Value float64
	Group string
}

// Layout, in pixels. Text widths are estimated, not measured, so that the
// output depends on nothing but the input.
const (
	width      = 900
	pad        = 12
	titleY     = 28
	legendY    = 46 // top of the first row of legend swatches
	legendRow  = 20
	swatch     = 12
	plotTop    = 72 // below a one-row legend
	rowHeight  = 28
	barHeight  = 18
	axisSpace  = 32 // below the rows, for the tick labels
	charWidth  = 7  // a generous average for 12 px sans-serif
	minLabelW  = 60
	maxLabelW  = 360
	minValueW  = 60  // right of the longest bar, for its value label
	maxValueW  = 240 // so the plot keeps at least a third of the width
	maxLegendW = 280 // longest legend entry, swatch included
	minTickPx  = 56  // closer tick labels would overlap, so some are skipped
)

// palette is Tableau 10: distinct hues that survive the common colour-vision
// deficiencies and print well on white. Groups past the tenth reuse colours.
var palette = [...]string{
	"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
	"#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
}

// SVG writes a horizontal bar chart of bars, one row each in the given
// order, with a log10 x axis gridded at powers of ten. Each bar is labelled
// with its value to three significant digits. Values and ticks are printed
// in unit: "ns" is shown as ns, µs, ms or s as the size requires; any other
// unit follows the number as given. Labels too long for the label column are
// shortened with an ellipsis.
//
// The output is a complete SVG document that references nothing external,
// and the same arguments always produce the same bytes. SVG returns an
// error, writing nothing, if bars is empty or a value is not positive and
// finite. It is safe to call from multiple goroutines.
func SVG(w io.Writer, title, unit string, bars []Bar) error {
	if len(bars) == 0 {
		return errors.New("chart: no bars to draw")
	}
	for _, b := range bars {
		if !(b.Value > 0) || math.IsInf(b.Value, 1) {
			return fmt.Errorf("chart: bar %q: value %v is not positive and finite", b.Label, b.Value)
		}
	}
	var buf bytes.Buffer
	render(&buf, title, unit, bars)
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("chart: writing SVG: %w", err)
	}
	return nil
}

// legendItem is one group's swatch and name.
type legendItem struct {
	name, color string
	x, y        int
}

// layout is everything render needs to know before it writes a byte.
type layout struct {
	labels, values []string // fitted bar labels, formatted values
	labelRight     int      // x where bar labels end
	legend         []legendItem
	colors         map[string]string // by group, "" included
	top, bottom    int               // y of the first row and below the last
	height         int
	sc             scale
}

func newLayout(unit string, bars []Bar) layout {
	l := layout{colors: make(map[string]string)}
	labelW, valueW := minLabelW, minValueW
	for _, b := range bars {
		label := fit(b.Label, maxLabelW)
		value := FormatValue(b.Value, unit)
		l.labels = append(l.labels, label)
		l.values = append(l.values, value)
		labelW = max(labelW, textWidth(label))
		valueW = max(valueW, textWidth(value)+12)
	}
	valueW = min(valueW, maxValueW)
	l.labelRight = pad + labelW

	x, y := pad, legendY
	for _, b := range bars {
		if _, ok := l.colors[b.Group]; ok {
			continue
		}
		l.colors[b.Group] = palette[len(l.colors)%len(palette)]
		if b.Group == "" {
			continue
		}
		name := fit(b.Group, maxLegendW-swatch-6)
		w := swatch + 6 + textWidth(name)
		if x > pad && x+w > width-pad { // wrap to a new legend row
			x, y = pad, y+legendRow
		}
		l.legend = append(l.legend, legendItem{name: name, color: l.colors[b.Group], x: x, y: y})
		x += w + 18
	}

	l.top = plotTop + (y - legendY)
	l.bottom = l.top + len(bars)*rowHeight
	l.height = l.bottom + axisSpace
	l.sc = newScale(bars, float64(l.labelRight+8), float64(width-pad-valueW))
	return l
}

// render draws validated bars.
func render(buf *bytes.Buffer, title, unit string, bars []Bar) {
	l := newLayout(unit, bars)
	fmt.Fprintf(buf, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12" fill="#222222">`+"\n",
		width, l.height, width, l.height)
	fmt.Fprintf(buf, "<title>%s</title>\n", escape(title))
	// An opaque background keeps the dark text readable in dark-mode viewers.
	fmt.Fprintf(buf, `<rect class="background" width="%d" height="%d" fill="#ffffff"/>`+"\n", width, l.height)
	fmt.Fprintf(buf, `<text class="title" x="%d" y="%d" font-size="16" font-weight="bold">%s</text>`+"\n",
		pad, titleY, escape(fit(title, width-2*pad-80)))
	fmt.Fprintf(buf, `<text class="note" x="%d" y="%d" text-anchor="end" fill="#666666">log scale</text>`+"\n", width-pad, titleY)

	buf.WriteString(`<g class="legend">` + "\n")
	for _, it := range l.legend {
		fmt.Fprintf(buf, `<rect class="legend" x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n",
			it.x, it.y, swatch, swatch, it.color)
		fmt.Fprintf(buf, `<text class="legend" x="%d" y="%d">%s</text>`+"\n",
			it.x+swatch+6, it.y+swatch-2, escape(it.name))
	}
	buf.WriteString("</g>\n")

	writeAxis(buf, l.sc, unit, l.top, l.bottom)

	buf.WriteString(`<g class="bars">` + "\n")
	for i, b := range bars {
		mid := float64(l.top+i*rowHeight) + rowHeight/2
		textY := mid + 4 // the baseline that centres 12 px text on mid
		end := l.sc.x(b.Value)
		fmt.Fprintf(buf, `<text class="label" x="%d" y="%s" text-anchor="end">%s</text>`+"\n",
			l.labelRight, num(textY), escape(l.labels[i]))
		fmt.Fprintf(buf, `<rect class="bar" x="%s" y="%s" width="%s" height="%d" fill="%s"/>`+"\n",
			num(l.sc.left), num(mid-barHeight/2), num(end-l.sc.left), barHeight, l.colors[b.Group])
		fmt.Fprintf(buf, `<text class="value" x="%s" y="%s">%s</text>`+"\n",
			num(end+6), num(textY), escape(l.values[i]))
	}
	buf.WriteString("</g>\n</svg>\n")
}

// writeAxis draws a grid line at every power of ten and labels as many as fit.
func writeAxis(buf *bytes.Buffer, sc scale, unit string, top, bottom int) {
	every := 1
	if px := sc.perDecade(); px < minTickPx {
		every = int(math.Ceil(minTickPx / px))
	}
	buf.WriteString(`<g class="axis">` + "\n")
	for e := sc.lo; e <= sc.hi; e++ {
		x := num(sc.xExp(float64(e)))
		fmt.Fprintf(buf, `<line class="tick" x1="%s" y1="%d" x2="%s" y2="%d" stroke="#dddddd" stroke-width="1"/>`+"\n",
			x, top-4, x, bottom+4)
		if (e-sc.lo)%every == 0 {
			fmt.Fprintf(buf, `<text class="tick" x="%s" y="%d" text-anchor="middle" fill="#666666">%s</text>`+"\n",
				x, bottom+18, escape(FormatValue(math.Pow10(e), unit)))
		}
	}
	buf.WriteString("</g>\n")
}

// fit shortens s with an ellipsis so that its estimated width is at most px.
func fit(s string, px int) string {
	limit := px / charWidth
	if utf8.RuneCountInString(s) <= limit {
		return s
	}
	r := []rune(s)
	return string(r[:limit-1]) + "…"
}

// textWidth estimates the rendered width of s in pixels.
func textWidth(s string) int {
	return utf8.RuneCountInString(s) * charWidth
}

// escape makes s safe as XML character data or a quoted attribute value.
func escape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s)) // a strings.Builder never fails
	return b.String()
}

// num formats a coordinate with one decimal, enough for a crisp render.
func num(f float64) string {
	return fmt.Sprintf("%.1f", f)
}
