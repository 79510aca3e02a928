package ops

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
)

// benchRows is the size of the benchmarks' input (a smoke run with -short
// takes a small one).
func benchRows() int {
	if testing.Short() {
		return 5_000
	}
	return 200_000
}

// benchInput returns a realistic 4-column export: email, first name,
// country, signup date.
func benchInput(ndjson bool) []byte {
	names := []string{"ana", "bo", "chloé", "dmitri", "eve", "farah", "gus", "hana"}
	domains := []string{"gmail.com", "example.com", "yahoo.co.uk", "outlook.com", "posteo.de"}
	countries := []string{"GB", "DE", "US", "FR", "NO"}
	var b bytes.Buffer
	if !ndjson {
		b.WriteString("email,first_name,country,signup\n")
	}
	for i := range benchRows() {
		n := names[i%len(names)]
		email := fmt.Sprintf("%s.%d@%s", n, i, domains[i%len(domains)])
		date := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute).Format("2006-01-02")
		if ndjson {
			fmt.Fprintf(&b, `{"email":"%s","first_name":"%s","country":"%s","signup":"%s"}`+"\n", email, n, countries[i%len(countries)], date)
		} else {
			fmt.Fprintf(&b, "%s,%s,%s,%s\n", email, n, countries[i%len(countries)], date)
		}
	}
	return b.Bytes()
}

func benchPseudonymize(b *testing.B, ndjson bool) {
	in := benchInput(ndjson)
	p, err := newPseudonymizer(anonymize.GenerateKey(), "siphash", "email", "", "email")
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(io.Discard, ioBuf)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	b.ResetTimer()
	var rows int64
	for range b.N {
		var n int64
		if ndjson {
			n, _, err = pseudonymizeNDJSON(p, bytes.NewReader(in), w, "pseudonym", false, &progress{})
		} else {
			n, _, err = pseudonymizeCSV(p, bytes.NewReader(in), w, "pseudonym", false, &progress{})
		}
		if err != nil || n != int64(benchRows()) {
			b.Fatal(n, err)
		}
		rows += n
	}
	b.StopTimer()
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(rows)/sec, "rows/s")
	b.ReportMetric(sec*1e9/float64(rows), "ns/row")
}

func BenchmarkPseudonymizeCSV(b *testing.B)    { benchPseudonymize(b, false) }
func BenchmarkPseudonymizeNDJSON(b *testing.B) { benchPseudonymize(b, true) }
