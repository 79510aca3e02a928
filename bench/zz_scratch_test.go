package bench

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/internal/sample"
	"github.com/personify-go/personify/personify"
)

func TestZZScratch(t *testing.T) {
	key, _ := anonymize.KeyFromHex(demoKeyHex)
	e, err := personify.New(personify.Options{Key: key, Audit: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := sample.Define(e); err != nil {
		t.Fatal(err)
	}
	if _, err := sample.Load(e); err != nil {
		t.Fatal(err)
	}
	pe, err := newSidecarPeople()
	if err != nil {
		t.Fatal(err)
	}
	var buf []string
	start := time.Now()
	n := 20000
	for i := range n {
		buf = e.Segments(buf[:0], pe.pseudonyms[i&sidecarProbeMask], "personalization")
	}
	t.Logf("Segments in-process: %v/op, last %q", time.Since(start)/time.Duration(n), buf)
}
