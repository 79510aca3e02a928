package ops

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/spf13/cobra"

	"github.com/personify-go/personify/anonymize"
)

// ioBuf is the size of the input and output buffers.
const ioBuf = 1 << 20

// maxLine bounds one NDJSON line.
const maxLine = 16 << 20

type pseudoFlags struct {
	column, as, format, kind, region, keyFile, hasher, onInvalid, out string
	progress, quiet                                                   bool
}

func pseudonymizeCommand() *cobra.Command {
	var f pseudoFlags
	cmd := &cobra.Command{
		Use:   "pseudonymize [FILE|-]",
		Short: "Replace an identifier column of a CSV or NDJSON file with its pseudonyms",
		Long: `pseudonymize reads CSV (with a header row) or NDJSON (one JSON object per
line) from FILE or standard input and writes the same format to --out or
standard output, with the identifier column --column replaced, in its place,
by a column named --as holding each identifier's pseudonym (16 hex digits),
computed as the engine computes it with the same key and hasher
(Engine.Pseudonym). The identifiers are dropped; every other column is kept,
in order. A CSV header that names --column twice is refused. In NDJSON only
the top-level member named --column is replaced: an identifier nested inside
another member is left as it is (flatten such exports first).

The key comes from --key-file, or from PERSONIFY_KEY (the key in hex) when
--key-file is not given. --hasher must be the engine's (siphash unless
Options.Hasher says otherwise). Phone numbers without a leading + are read as
dialled in --region.

A row whose identifier is invalid fails the command with "row N: column C:
<reason>" (N counts data rows from 1; the reason never quotes the value);
with --on-invalid skip such rows are left out and counted on standard error.
Progress (rows, rows per second, percent of a regular file) goes to standard
error when it is a terminal or with --progress; --quiet turns it off.`,
		Example: `  personify pseudonymize --key-file key --column email users.csv --out users.pseudo.csv
  personify pseudonymize --key-file key --column phone --kind phone --region GB --on-invalid skip < crm.ndjson > crm.pseudo.ndjson
  PERSONIFY_KEY=$(cat key) personify pseudonymize --column user_id --kind user --as member export.csv`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := "-"
			if len(args) == 1 {
				in = args[0]
			}
			return runPseudonymize(cmd, f, in)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.column, "column", "", "the identifier column (required)")
	fl.StringVar(&f.as, "as", "pseudonym", "the name of the pseudonym column that replaces it")
	fl.StringVar(&f.format, "format", "", "csv or ndjson (default: from the file's extension, else csv)")
	fl.StringVar(&f.kind, "kind", "email", "the identifiers' kind: email, phone, user or device")
	fl.StringVar(&f.region, "region", "", "the region (ISO 3166 code, e.g. GB) of phone numbers written without +")
	fl.StringVar(&f.keyFile, "key-file", "", "the key file (default: the key in hex in $"+keyEnv+")")
	fl.StringVar(&f.hasher, "hasher", "siphash", "siphash or hmac-sha256: the engine's Options.Hasher")
	fl.StringVar(&f.onInvalid, "on-invalid", "fail", "fail, or skip rows with an invalid identifier")
	fl.StringVarP(&f.out, "out", "o", "", "the output file (default: standard output)")
	fl.BoolVar(&f.progress, "progress", false, "show progress on standard error even when it is not a terminal")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no progress")
	_ = cmd.MarkFlagRequired("column")
	return cmd
}

// pseudonymizer turns identifiers of one kind into pseudonyms.
type pseudonymizer struct {
	h      anonymize.Hasher
	kind   anonymize.Kind
	region string
	column string
}

func newPseudonymizer(key anonymize.Key, hasher, kind, region, column string) (*pseudonymizer, error) {
	mk, err := hasherFor(hasher)
	if err != nil {
		return nil, err
	}
	p := &pseudonymizer{h: mk(key), region: region, column: column}
	if p.kind, err = parseKind(kind); err != nil {
		return nil, err
	}
	if region != "" && p.kind != anonymize.KindPhone {
		return nil, fmt.Errorf("--region applies to phone numbers, not to --kind %s", kind)
	}
	return p, nil
}

func parseKind(kind string) (anonymize.Kind, error) {
	switch kind {
	case "email":
		return anonymize.KindEmail, nil
	case "phone":
		return anonymize.KindPhone, nil
	case "user", "user_id", "user-id":
		return anonymize.KindUserID, nil
	case "device", "device_id", "device-id":
		return anonymize.KindDeviceID, nil
	}
	return 0, fmt.Errorf("--kind %q: want email, phone, user or device", kind)
}

// identifier returns s as an identifier of p's kind.
func (p *pseudonymizer) identifier(s string) anonymize.Identifier {
	switch p.kind {
	case anonymize.KindPhone:
		if p.region != "" {
			return anonymize.PhoneIn(p.region, s)
		}
		return anonymize.Phone(s)
	case anonymize.KindUserID:
		return anonymize.UserID(s)
	case anonymize.KindDeviceID:
		return anonymize.DeviceID(s)
	}
	return anonymize.Email(s)
}

// pseudonym returns the pseudonym of s, or a rowError that does not hold s.
func (p *pseudonymizer) pseudonym(row int64, s string) (anonymize.Pseudonym, error) {
	ps, err := p.h.Pseudonym(p.identifier(s))
	if err != nil {
		return 0, identifierErr(row, p.column, err)
	}
	return ps, nil
}

// rowError is a row that the command fails on, or skips with --on-invalid
// skip. Its message names the row, the column and the reason, never the
// value.
type rowError struct {
	row int64
	msg string
}

func (e *rowError) Error() string { return fmt.Sprintf("row %d: %s", e.row, e.msg) }

func identifierErr(row int64, column string, err error) error {
	var ie *anonymize.IdentifierError
	if errors.As(err, &ie) {
		return &rowError{row, fmt.Sprintf("column %s: invalid %s: %s", column, ie.Kind, ie.Reason)}
	}
	if errors.Is(err, anonymize.ErrInvalidIdentifier) {
		return &rowError{row, fmt.Sprintf("column %s: invalid identifier", column)}
	}
	return fmt.Errorf("row %d: column %s: %w", row, column, err) // the key's errors name its fingerprint only
}

// detectFormat returns the --format to use for input path in.
func detectFormat(format, in string) (string, error) {
	switch format {
	case "csv", "ndjson":
		return format, nil
	case "jsonl":
		return "ndjson", nil
	case "":
		switch strings.ToLower(filepath.Ext(in)) {
		case ".ndjson", ".jsonl", ".json":
			return "ndjson", nil
		}
		return "csv", nil
	}
	return "", fmt.Errorf("--format %q: want csv or ndjson", format)
}

// openInput opens in ("-": stdin) and returns it with its size (0 when
// unknown).
func openInput(cmd *cobra.Command, in string) (io.Reader, int64, func(), error) {
	if in == "-" {
		r := cmd.InOrStdin()
		var size int64
		if f, ok := r.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				size = fi.Size()
			}
		}
		return r, size, func() {}, nil
	}
	f, err := os.Open(in)
	if err != nil {
		return nil, 0, nil, err
	}
	var size int64
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size = fi.Size()
	}
	return f, size, func() { f.Close() }, nil
}

func runPseudonymize(cmd *cobra.Command, f pseudoFlags, in string) (err error) {
	format, err := detectFormat(f.format, in)
	if err != nil {
		return err
	}
	skip := false
	switch f.onInvalid {
	case "fail":
	case "skip":
		skip = true
	default:
		return fmt.Errorf("--on-invalid %q: want fail or skip", f.onInvalid)
	}
	if f.as == "" {
		return errors.New("--as is empty: name the pseudonym column")
	}
	key, err := readKey(f.keyFile)
	if err != nil {
		return err
	}
	defer key.Destroy()
	p, err := newPseudonymizer(key, f.hasher, f.kind, f.region, f.column)
	if err != nil {
		return err
	}
	r, size, closeIn, err := openInput(cmd, in)
	if err != nil {
		return err
	}
	defer closeIn()
	var w io.Writer = cmd.OutOrStdout()
	if f.out != "" && f.out != "-" {
		if in != "-" && sameFile(in, f.out) {
			return fmt.Errorf("--out %s is the input file", f.out)
		}
		// A temporary file beside --out (mode 600), renamed over it only
		// once complete: a failed run leaves no half a file, an existing
		// --out gets the new mode, and a symbolic link there is replaced,
		// not written through.
		of, terr := os.CreateTemp(filepath.Dir(f.out), "."+filepath.Base(f.out)+".*.tmp")
		if terr != nil {
			return terr
		}
		defer func() {
			if err == nil {
				err = of.Sync()
			}
			if cerr := of.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(of.Name(), f.out)
			}
			if err != nil {
				_ = os.Remove(of.Name())
			}
		}()
		w = of
	}
	cr := &countReader{r: r}
	prog := newProgress(cmd.ErrOrStderr(), f.progress, f.quiet, size, cr)
	bw := bufio.NewWriterSize(w, ioBuf)
	var rows, skipped int64
	if format == "csv" {
		rows, skipped, err = pseudonymizeCSV(p, cr, bw, f.as, skip, prog)
	} else {
		rows, skipped, err = pseudonymizeNDJSON(p, cr, bw, f.as, skip, prog)
	}
	prog.done(rows)
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if skipped > 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "skipped %d of %d rows with an invalid %s\n", skipped, rows, f.column)
	}
	return nil
}

func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// newCSVReader returns a reader of records with the options both commands
// use.
func newCSVReader(r io.Reader) *csv.Reader {
	cr := csv.NewReader(bufio.NewReaderSize(r, ioBuf))
	cr.ReuseRecord = true
	return cr
}

// csvHeader reads the header and returns it with the index of column.
func csvHeader(cr *csv.Reader, column string) ([]string, int, error) {
	h, err := cr.Read()
	if err == io.EOF {
		return nil, 0, errors.New("the input is empty: CSV needs a header row")
	}
	if err != nil {
		return nil, 0, fmt.Errorf("the header: %w", err)
	}
	h = append([]string(nil), h...)
	if len(h) > 0 {
		h[0] = strings.TrimPrefix(h[0], "\ufeff") // a byte order mark
	}
	at := -1
	for i, name := range h {
		if name == column {
			if at >= 0 {
				// Which one holds the identifier? Both may: the other would be
				// written as it is.
				return nil, 0, fmt.Errorf("the header names column %q twice (columns %d and %d): rename or drop one", column, at+1, i+1)
			}
			at = i
		}
	}
	if at < 0 {
		return nil, 0, fmt.Errorf("no column %q in the header (it has %d columns)", column, len(h))
	}
	return h, at, nil
}

// csvRowErr presents an error of csv.Reader, which never quotes the input.
func csvRowErr(row int64, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount) {
		return &rowError{row, fmt.Sprintf("line %d: %v", pe.Line, pe.Err)}
	}
	return fmt.Errorf("row %d: %w", row, err)
}

func pseudonymizeCSV(p *pseudonymizer, r io.Reader, w *bufio.Writer, as string, skip bool, prog *progress) (rows, skipped int64, err error) {
	cr := newCSVReader(r)
	header, col, err := csvHeader(cr, p.column)
	if err != nil {
		return 0, 0, err
	}
	for i, name := range header {
		if i != col && name == as {
			return 0, 0, fmt.Errorf("--as %q: the header has a column of that name already", as)
		}
	}
	header[col] = as
	writeCSVRecord(w, header, -1, nil)
	var hex []byte
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return rows, skipped, nil
		}
		rows++
		if err == nil {
			var ps anonymize.Pseudonym
			if ps, err = p.pseudonym(rows, rec[col]); err == nil {
				hex = appendHex(hex[:0], ps)
				writeCSVRecord(w, rec, col, hex)
			}
		} else {
			err = csvRowErr(rows, err)
		}
		if err != nil {
			var re *rowError
			if !skip || !errors.As(err, &re) {
				return rows, skipped, err
			}
			skipped++
		}
		if rows&1023 == 0 {
			prog.tick(rows)
		}
	}
}

// writeCSVRecord writes rec as a CSV line, with field col replaced by
// repl, quoting as encoding/csv does.
func writeCSVRecord(w *bufio.Writer, rec []string, col int, repl []byte) {
	for i, f := range rec {
		if i > 0 {
			w.WriteByte(',')
		}
		if i == col {
			w.Write(repl)
			continue
		}
		writeCSVField(w, f)
	}
	w.WriteByte('\n')
}

func writeCSVField(w *bufio.Writer, f string) {
	if f == "" || !(strings.ContainsAny(f, ",\"\r\n") || f[0] == ' ' || f[0] == '\t' || f == `\.`) {
		w.WriteString(f)
		return
	}
	w.WriteByte('"')
	for {
		i := strings.IndexByte(f, '"')
		if i < 0 {
			break
		}
		w.WriteString(f[:i+1])
		w.WriteByte('"')
		f = f[i+1:]
	}
	w.WriteString(f)
	w.WriteByte('"')
}

// lineReader reads NDJSON lines of up to maxLine bytes.
type lineReader struct {
	br   *bufio.Reader
	long []byte
}

// next returns the next line without its end of line, valid until the
// next call; io.EOF at the end.
func (l *lineReader) next() ([]byte, error) {
	b, err := l.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		l.long = append(l.long[:0], b...)
		for err == bufio.ErrBufferFull {
			if len(l.long) > maxLine {
				return nil, fmt.Errorf("a line is longer than %d MiB", maxLine>>20)
			}
			b, err = l.br.ReadSlice('\n')
			l.long = append(l.long, b...)
		}
		b = l.long
	}
	if err == io.EOF && len(b) > 0 {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	b = b[:len(b)-trailingEOL(b)]
	return b, nil
}

func trailingEOL(b []byte) int {
	n := 0
	if n < len(b) && b[len(b)-1-n] == '\n' {
		n++
	}
	if n < len(b) && b[len(b)-1-n] == '\r' {
		n++
	}
	return n
}

// isBlank reports whether b is only JSON whitespace.
func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// ndjsonValue returns the identifier in the member m of line b, or a
// rowError. The string may alias b.
func ndjsonValue(b []byte, m member, row int64, column string) (string, error) {
	if !m.found {
		return "", &rowError{row, fmt.Sprintf("column %s: missing", column)}
	}
	if m.dup {
		return "", &rowError{row, fmt.Sprintf("column %s: appears more than once in the object", column)}
	}
	v := b[m.val:m.end]
	switch c := v[0]; {
	case c == '"' && m.slowValue:
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", &rowError{row, errNotObject.Error()}
		}
		return s, nil
	case c == '"':
		v = v[1 : len(v)-1]
	case c == '-' || isDigit(c): // an ID written as a number
	case c == 'n':
		return "", &rowError{row, fmt.Sprintf("column %s: null", column)}
	default:
		return "", &rowError{row, fmt.Sprintf("column %s: not a string or a number", column)}
	}
	return unsafe.String(unsafe.SliceData(v), len(v)), nil
}

func pseudonymizeNDJSON(p *pseudonymizer, r io.Reader, w *bufio.Writer, as string, skip bool, prog *progress) (rows, skipped int64, err error) {
	lr := &lineReader{br: bufio.NewReaderSize(r, ioBuf)}
	asJSON, _ := json.Marshal(as)
	prefix := append(asJSON, ':', '"')
	var hex []byte
	for {
		b, err := lr.next()
		if err == io.EOF {
			return rows, skipped, nil
		}
		if err != nil {
			return rows, skipped, fmt.Errorf("row %d: %w", rows+1, err)
		}
		if isBlank(b) {
			continue
		}
		rows++
		var m member
		if m, err = findMember(b, p.column, as); err != nil {
			err = &rowError{rows, err.Error()}
		} else if m.other {
			err = &rowError{rows, fmt.Sprintf("the object has a member %s already (--as)", asJSON)}
		}
		var s string
		if err == nil {
			s, err = ndjsonValue(b, m, rows, p.column)
		}
		var ps anonymize.Pseudonym
		if err == nil {
			ps, err = p.pseudonym(rows, s)
		}
		if err != nil {
			var re *rowError
			if !skip || !errors.As(err, &re) {
				return rows, skipped, err
			}
			skipped++
			continue
		}
		w.Write(b[:m.start])
		w.Write(prefix)
		hex = appendHex(hex[:0], ps)
		w.Write(hex)
		w.WriteByte('"')
		w.Write(b[m.end:])
		w.WriteByte('\n')
		if rows&1023 == 0 {
			prog.tick(rows)
		}
	}
}
