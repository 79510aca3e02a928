package ops

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

type loadFlags struct {
	dir, keyFile, segment, column, idColumn, kind, region, format, hasher, onInvalid string
	remove, define                                                                   bool
	purpose, description, consent                                                    string
	retention                                                                        time.Duration
	batch                                                                            int
}

func loadCommand() *cobra.Command {
	var f loadFlags
	cmd := &cobra.Command{
		Use:   "load --dir DIR --segment NAME [FILE|-]",
		Short: "Bulk-load a segment's members from a CSV or NDJSON file into a data directory",
		Long: `load adds the rows of a CSV or NDJSON file (FILE or standard input) to a
segment of the durable data directory --dir, or removes them with --remove.
The rows name people by pseudonym (--column, default "pseudonym": 16 hex
digits, as personify pseudonymize writes them) or by identifier
(--id-column with --kind, pseudonymized here with the directory's key).
Pseudonyms are loaded in batches of --batch per logged change
(Engine.AddPseudonyms, RemovePseudonyms); identifiers with Engine.Add, and
removed one logged change each (Engine.Remove, under every key): remove many
by pseudonym.

The segment must be defined; --define defines it if it is missing, with
--purpose (declared too if missing, with --consent opt-out or opt-in),
--description and --retention. The directory is opened with personify.Open,
which locks it: stop a server that has it open, or load through the server.
It prints the rows read and the segment's size before and after. A row that
is not a pseudonym or a valid identifier fails the command with its row
number (or is skipped with --on-invalid skip); its value is never printed.`,
		Example: `  personify pseudonymize --key-file key --column email users.csv | personify load --dir /var/lib/personify --key-file key --segment runners
  personify load --dir data --key-file key --segment vip --id-column email --kind email vip.csv
  personify load --dir data --key-file key --segment lapsed --define --purpose ads --description "No order in a year" --retention 720h lapsed.ndjson
  personify load --dir data --key-file key --segment runners --remove unsubscribed.csv`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := "-"
			if len(args) == 1 {
				in = args[0]
			}
			return runLoad(cmd, f, in)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", "", "the data directory (required)")
	fl.StringVar(&f.keyFile, "key-file", "", "the key file (default: the key in hex in $"+keyEnv+")")
	fl.StringVar(&f.segment, "segment", "", "the segment (required)")
	fl.StringVar(&f.column, "column", "pseudonym", "the column of pseudonyms")
	fl.StringVar(&f.idColumn, "id-column", "", "the column of identifiers, instead of pseudonyms")
	fl.StringVar(&f.kind, "kind", "email", "with --id-column: email, phone, user or device")
	fl.StringVar(&f.region, "region", "", "with --id-column and --kind phone: the region of numbers without +")
	fl.StringVar(&f.format, "format", "", "csv or ndjson (default: from the file's extension, else csv)")
	fl.StringVar(&f.hasher, "hasher", "siphash", "siphash or hmac-sha256: the engine's Options.Hasher")
	fl.StringVar(&f.onInvalid, "on-invalid", "fail", "fail, or skip invalid rows")
	fl.BoolVar(&f.remove, "remove", false, "remove the rows from the segment instead of adding them")
	fl.BoolVar(&f.define, "define", false, "define the segment if it is missing (with --purpose)")
	fl.StringVar(&f.purpose, "purpose", "", "with --define: the segment's purpose")
	fl.StringVar(&f.description, "description", "", "with --define: what membership means, for the person")
	fl.StringVar(&f.consent, "consent", "opt-out", "with --define, for a purpose not declared yet: opt-out or opt-in")
	fl.DurationVar(&f.retention, "retention", 0, "with --define: how long a membership lasts (e.g. 720h; 0: until removed)")
	fl.IntVar(&f.batch, "batch", 64<<10, "pseudonyms per logged change")
	_ = cmd.MarkFlagRequired("dir")
	_ = cmd.MarkFlagRequired("segment")
	return cmd
}

func runLoad(cmd *cobra.Command, f loadFlags, in string) (err error) {
	format, err := detectFormat(f.format, in)
	if err != nil {
		return err
	}
	skip := f.onInvalid == "skip"
	if !skip && f.onInvalid != "fail" {
		return fmt.Errorf("--on-invalid %q: want fail or skip", f.onInvalid)
	}
	if f.batch < 1 {
		return fmt.Errorf("--batch %d: want at least 1", f.batch)
	}
	key, err := readKey(f.keyFile)
	if err != nil {
		return err
	}
	defer key.Destroy()
	mk, err := hasherFor(f.hasher)
	if err != nil {
		return err
	}
	var ids *pseudonymizer
	column := f.column
	if f.idColumn != "" {
		column = f.idColumn
		if ids, err = newPseudonymizer(key, f.hasher, f.kind, f.region, f.idColumn); err != nil {
			return err
		}
	}
	r, _, closeIn, err := openInput(cmd, in)
	if err != nil {
		return err
	}
	defer closeIn()

	e, err := personify.Open(f.dir, personify.Options{Key: key, Hasher: mk})
	if errors.Is(err, personify.ErrLocked) {
		return fmt.Errorf("%w: is a server running on it? Stop it, or load through its API", err)
	}
	if err != nil {
		return err
	}
	defer func() {
		if cerr := e.Close(); err == nil {
			err = cerr
		}
	}()
	before, err := e.Len(f.segment)
	if errors.Is(err, personify.ErrUnknownSegment) {
		if !f.define {
			return fmt.Errorf("segment %q is not defined in %s: define it first (Engine.Define), or add --define --purpose P --description D [--retention 720h] to define it here", f.segment, f.dir)
		}
		if err = defineSegment(e, f); err == nil {
			before, err = e.Len(f.segment)
		}
	}
	if err != nil {
		return err
	}

	var ps []anonymize.Pseudonym
	var batch []anonymize.Identifier
	flush := func() error {
		var err error
		switch {
		case len(ps) > 0 && f.remove:
			err = e.RemovePseudonyms(f.segment, ps)
		case len(ps) > 0:
			err = e.AddPseudonyms(f.segment, ps)
		case len(batch) > 0:
			err = e.Add(f.segment, batch...)
		}
		ps, batch = ps[:0], batch[:0]
		return err
	}
	rows, skipped, err := eachValue(r, format, column, skip, func(row int64, v string) error {
		if ids == nil {
			p, err := anonymize.ParsePseudonym(v)
			if err != nil {
				return &rowError{row, fmt.Sprintf("column %s: not a pseudonym (16 hex digits)", column)}
			}
			ps = append(ps, p)
		} else {
			if _, err := ids.pseudonym(row, v); err != nil {
				return err
			}
			id := ids.identifier(strings.Clone(v))
			if f.remove {
				return e.Remove(f.segment, id)
			}
			batch = append(batch, id)
		}
		if len(ps)+len(batch) >= f.batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	after, err := e.Len(f.segment)
	if err != nil {
		return err
	}
	verb := "added to"
	if f.remove {
		verb = "removed from"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%d rows %s segment %s: %d members before, %d after (%+d)\n", rows-skipped, verb, f.segment, before, after, after-before)
	if skipped > 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "skipped %d of %d rows that were not valid\n", skipped, rows)
	}
	return nil
}

func defineSegment(e *personify.Engine, f loadFlags) error {
	if f.purpose == "" {
		return fmt.Errorf("segment %q is not defined: --define needs --purpose", f.segment)
	}
	seg := personify.Segment{Name: f.segment, Purpose: f.purpose, Description: f.description, Retention: f.retention}
	err := e.Define(seg)
	if errors.Is(err, personify.ErrUnknownPurpose) {
		model := personify.OptOut
		switch f.consent {
		case "opt-out":
		case "opt-in":
			model = personify.OptIn
		default:
			return fmt.Errorf("--consent %q: want opt-out or opt-in", f.consent)
		}
		if err = e.DefinePurpose(personify.Purpose{Name: f.purpose, Model: model}); err == nil {
			err = e.Define(seg)
		}
	}
	return err
}

// eachValue calls fn with every row's value of column in r (CSV or
// NDJSON); the value is valid during the call only. A rowError, from the
// input or from fn, fails it, or with skip is counted and passed over.
func eachValue(r io.Reader, format, column string, skip bool, fn func(row int64, v string) error) (rows, skipped int64, err error) {
	handle := func(err error) error {
		var re *rowError
		if err != nil && skip && errors.As(err, &re) {
			skipped++
			return nil
		}
		return err
	}
	if format == "csv" {
		cr := newCSVReader(r)
		_, col, err := csvHeader(cr, column)
		if err != nil {
			return 0, 0, err
		}
		for {
			rec, err := cr.Read()
			if err == io.EOF {
				return rows, skipped, nil
			}
			rows++
			if err != nil {
				err = csvRowErr(rows, err)
			} else {
				err = fn(rows, rec[col])
			}
			if err = handle(err); err != nil {
				return rows, skipped, err
			}
		}
	}
	lr := &lineReader{br: bufio.NewReaderSize(r, ioBuf)}
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
		m, err := findMember(b, column, column)
		var v string
		if err != nil {
			err = &rowError{rows, err.Error()}
		} else if v, err = ndjsonValue(b, m, rows, column); err == nil {
			err = fn(rows, v)
		}
		if err = handle(err); err != nil {
			return rows, skipped, err
		}
	}
}
